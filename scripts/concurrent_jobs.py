"""Start two jobs at the same moment, N times over, each pair against a new MLflow store and all in one outputs/.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/concurrent_jobs.py [--rounds 20] [--out /tmp/tinyflow_concurrent]

Each job is a short `stages=[space]` run (debug=fast) whose run folder follows the default pattern
(`runs/<second>_<run id>`) under `<out>/runs`; the two jobs of a round differ in `space.widths`, so a folder holding
the other job's context is detected. Checks: every job exits 0, every job has its own run folder holding its own
context and log, each store holds exactly two FINISHED parent runs pointing at two different folders, and no job's
output mentions the store racing (alembic / migration / "database is locked"). Prints one line per round and a
summary; exit code 0 only when every check passed. `tests/test_robustness_concurrency.py` runs a small version.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STORE_ERRORS = ("alembic", "migration", "database is locked", "UNIQUE constraint", "looks like a bug")
WIDTHS = ("[0.35]", "[0.5]")


def command(out: Path, store: Path, widths: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tinyflow",
        "debug=fast",
        "data=mnist5k",
        "stages=[space]",
        f"space.widths={widths}",
        "space.resolutions=[32]",
        f"tracking.uri=sqlite:///{store}",
        f"cache.dir={out / 'cache'}",
        f"hydra.run.dir={out / 'runs'}/${{now:%Y-%m-%d_%H-%M-%S}}_${{tf_run_id:}}",
    ]


def run_round(out: Path, index: int) -> list[str]:
    """Start the two jobs together; the problems found (empty when the round is clean)."""
    store = out / "stores" / f"round{index:02d}.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            command(out, store, w), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for w in WIDTHS
    ]
    results = [p.communicate(timeout=600) for p in procs]
    problems = []
    for w, p, (stdout, stderr) in zip(WIDTHS, procs, results, strict=True):
        if p.returncode != 0:
            problems.append(f"job widths={w} exited {p.returncode}: {stderr.strip()[-400:]}")
        for needle in STORE_ERRORS:
            if needle.lower() in (stdout + stderr).lower():
                problems.append(f"job widths={w} output mentions {needle!r}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    exp = client.get_experiment_by_name("tinyflow")
    parents = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    dirs = [Path(r.data.tags["output_dir"]) for r in parents]
    if len(parents) != 2 or any(r.info.status != "FINISHED" for r in parents):
        problems.append(f"store holds {[(r.info.status) for r in parents]} parent runs, want 2 FINISHED")
    if len(set(dirs)) != len(dirs):
        problems.append(f"two runs share the folder {dirs[0]}")
    for d, r in zip(dirs, parents, strict=True):
        ctx = json.loads((d / "context.json").read_text())
        want = float(json.loads(r.data.params["space.widths"])[0])
        if ctx.get("width_mult") != want or ctx.get("completed") != ["space"]:
            problems.append(f"{d}: context {ctx.get('width_mult')} / {ctx.get('completed')} is not its job's")
        if (d / "tinyflow.log").read_text().count("stage space: start") != 1:
            problems.append(f"{d}: the log holds more than one job")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", default="/tmp/tinyflow_concurrent")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    failed = 0
    t0 = time.time()
    for i in range(args.rounds):
        start = time.time()
        problems = run_round(out, i)
        failed += bool(problems)
        print(f"round {i + 1:2d}: {'ok' if not problems else 'FAILED'} ({time.time() - start:.1f} s)", flush=True)
        for p in problems:
            print("   ", p)
    folders = sorted(p.name for p in (out / "runs").iterdir())
    print(
        f"{args.rounds} rounds, {2 * args.rounds} jobs in {time.time() - t0:.0f} s: {failed} round(s) failed; "
        f"{len(folders)} run folders, {len(set(folders))} distinct"
    )
    return 0 if failed == 0 and len(folders) == 2 * args.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
