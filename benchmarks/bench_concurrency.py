"""Two tinyflow jobs on one machine: one job alone, then two identical jobs started at once (issue 27).

Each job is a `python -m tinyflow` subprocess with its own output dir, train/search cache and MLflow store (so the
second job trains too, nothing is served from the first one's cache), in an environment WITHOUT any `*_NUM_THREADS`
variable: each job chooses its threads itself (tinyflow.threads: usable cores // tinyflow jobs running at once).
Prints the wall time of each, the `threads:` lines the jobs logged, and ends with
`two jobs at once ÷ one alone: <x>` (the mean wall time of the two ÷ the one alone's).

    .venv/bin/python benchmarks/bench_concurrency.py        # the default job (~7 min alone)
    .venv/bin/python benchmarks/bench_concurrency.py \
        --overrides "'stages=[space,train]' trainer.epochs=4 cache.train=false"

`--overrides "... threads=2"` pins each job to 2 threads: the behaviour before issue 27 on a 2-core host (torch's
default of one thread per core). The jobs register where every tinyflow job of this host does, so jobs someone else
runs meanwhile count too (as they would for any user); `--private-registry`: the benchmark's jobs count only each
other (on a quiet machine).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _env(jobs_dir: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_THREADS")}  # OMP_NUM_THREADS, MKL_..., ...
    env.pop("HYDRA_FULL_ERROR", None)
    if jobs_dir is not None:
        env["TINYFLOW_JOBS_DIR"] = str(jobs_dir)
    return env


def _start(name: str, work: Path, overrides: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    job = work / name
    job.mkdir(parents=True)
    cmd = [sys.executable, "-m", "tinyflow", *overrides, f"hydra.run.dir={job / 'run'}"]
    cmd += [f"cache.dir={job / 'cache'}", f"tracking.uri=sqlite:///{(job / 'mlflow.db').as_posix()}"]
    log = job / "console.log"
    handle = log.open("w")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT), log


def _wait(procs: list[tuple[subprocess.Popen, Path]], start: float) -> list[float]:
    walls = [0.0] * len(procs)
    left = set(range(len(procs)))
    while left:
        for i in list(left):
            if procs[i][0].poll() is not None:
                walls[i] = time.perf_counter() - start
                left.discard(i)
        time.sleep(0.2)
    for proc, log in procs:
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"a job failed (exit {proc.returncode}); its console ({log}) ends:\n{tail}")
    return walls


def _threads_lines(log: Path) -> list[str]:
    text = log.read_text(errors="replace")
    return [m.group(0) for m in re.finditer(r"threads: \d+ of \d+ cores? \([^)]*\)(, was \d+)?", text)]


def _load(jobs_dir: Path | None) -> str:
    """The load average and the tinyflow jobs registered (besides the benchmark's)."""
    from tinyflow.threads import Registry

    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "?"
    return f"load average {load}; other tinyflow jobs running: {len(Registry(jobs_dir).live())}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overrides", default="", help="overrides of each job, as on a shell command line")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a new temporary folder)")
    ap.add_argument("--private-registry", action="store_true", help="count only the benchmark's own jobs")
    args = ap.parse_args()
    overrides = shlex.split(args.overrides)
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_concurrency_"))
    jobs_dir = work / "jobs" if args.private_registry else None
    env = _env(jobs_dir)
    print(f"job: python -m tinyflow {' '.join(overrides)}  (work: {work})")
    print(f"cores: {len(os.sched_getaffinity(0))}; before: {_load(jobs_dir)}")

    start = time.perf_counter()
    alone = _wait([_start("alone", work, overrides, env)], start)[0]
    print(f"one alone: {alone:.1f} s   [{'; '.join(_threads_lines(work / 'alone' / 'console.log'))}]")
    print(f"after the one alone: {_load(jobs_dir)}")

    start = time.perf_counter()
    pair = [_start(f"pair{i}", work, overrides, env) for i in (1, 2)]
    walls = _wait(pair, start)
    for i, wall in enumerate(walls, 1):
        lines = _threads_lines(work / f"pair{i}" / "console.log")
        print(f"two at once, job {i}: {wall:.1f} s   [{'; '.join(lines)}]")
    print(f"after the two: {_load(jobs_dir)}")
    print(f"two jobs at once ÷ one alone: {sum(walls) / len(walls) / alone:.2f}")


if __name__ == "__main__":
    main()
