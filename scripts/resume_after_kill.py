"""kill -9 a job during training, `resume=last` it, and compare its report with an uninterrupted run's.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/resume_after_kill.py [--out /tmp/resume_demo] [overrides ...]

Three jobs of one config (default: the test suite's small pipeline on debug=fast, caches off so every job trains):
A runs uninterrupted; B is killed with SIGKILL as soon as the supernet's second epoch has printed its line (its
first `last.ckpt`, epochs_done=2... is then on disk at most one epoch behind); C runs with `resume=last` next to B.
Prints the lines of C's log that show where training resumed, the runs the store holds with their status, and every
number of `report.json` that differs between A and C (timings differ by nature and are listed apart).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "debug=fast",
    "data=mnist5k",
    "space.widths=[0.35,0.5]",
    "space.resolutions=[32]",
    "strategy.n_evaluations=16",
    "strategy.predictor.n_samples=20",
    "trainer.epochs=6",  # more than debug=fast's 4 so that the kill lands mid-training
    "cache.train=false",
    "cache.search=false",
]
#: report figures measured on the host's clock: they differ between any two runs
TIMINGS = ("host_latency", "wall_time", "seconds", "_s", "images_per_s")


def job(out: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tinyflow",
        *SMALL,
        f"tracking.uri=sqlite:///{out / 'mlflow.db'}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def flat(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        return {k: v for key, val in node.items() for k, v in flat(val, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/tinyflow_resume_demo")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    t0 = time.time()
    a = subprocess.run(job(out, out / "A", *args.overrides), cwd=REPO, env=env, capture_output=True, text=True)
    print(f"A (uninterrupted): exit {a.returncode} in {time.time() - t0:.0f} s")
    if a.returncode != 0:
        print(a.stderr[-3000:])
        return 1

    runs = out / "runs"
    proc = subprocess.Popen(
        job(out, runs / "B", *args.overrides),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    killed_after = None
    for line in proc.stdout:
        if line.startswith("[ofa] epoch 2 "):  # epoch 1's checkpoint is written; epoch 2's is being written next
            proc.send_signal(signal.SIGKILL)
            killed_after = line.strip()
            break
    proc.wait()
    print(f"B: killed with SIGKILL (exit {proc.returncode}) after the line {killed_after!r}")
    ckpt = runs / "B" / "train" / "last.ckpt"
    print(f"B left {ckpt} ({ckpt.stat().st_size if ckpt.exists() else 0} bytes)")

    t0 = time.time()
    c = subprocess.run(
        job(out, runs / "C", "resume=last", *args.overrides), cwd=REPO, env=env, capture_output=True, text=True
    )
    print(f"C (resume=last): exit {c.returncode} in {time.time() - t0:.0f} s")
    log = (runs / "C" / "tinyflow.log").read_text() if (runs / "C" / "tinyflow.log").exists() else ""
    for line in dict.fromkeys((log + c.stdout).splitlines()):  # Hydra logs to the file and to stdout
        if any(s in line for s in ("resuming", "Restoring", "[ofa] epoch", "marked")):
            print("   C |", line.strip()[:200])
    epochs_a = [ln for ln in a.stdout.splitlines() if ln.startswith("[ofa] epoch")]
    epochs_c = [ln for ln in c.stdout.splitlines() if ln.startswith("[ofa] epoch")]
    same = [ln.rsplit(" (", 1)[0] for ln in epochs_a[-len(epochs_c) :]] == [ln.rsplit(" (", 1)[0] for ln in epochs_c]
    print(f"C's epoch lines equal A's last {len(epochs_c)} (accuracies and loss, not the epoch times): {same}")
    if c.returncode != 0:
        print(c.stderr[-3000:])
        return 1

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tinyflow")
    for run in client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"]):
        if "mlflow.parentRunId" in run.data.tags:
            continue
        print(
            f"store: {Path(run.data.tags['output_dir']).name} parent run {run.info.status}"
            f"{' — ' + run.data.tags['error'] if 'error' in run.data.tags else ''}"
        )

    rep_a = flat(json.loads((out / "A" / "report.json").read_text()))
    rep_c = flat(json.loads((runs / "C" / "report.json").read_text()))
    differ = {k for k in rep_a.keys() | rep_c.keys() if rep_a.get(k) != rep_c.get(k)}
    timing = sorted(k for k in differ if any(t in k for t in TIMINGS))
    paths = {k for k in differ if str(rep_a.get(k)).startswith(str(out)) and str(rep_c.get(k)).startswith(str(out))}
    other = sorted(differ - set(timing) - paths)
    print(f"report.json: paths that differ (each run's own folder): {sorted(paths) or 'none'}")
    print(f"report.json: {len(rep_a)} figures; timings that differ: {timing or 'none'}")
    print(f"report.json: other figures that differ: {other or 'none'}")
    for k in other:
        print(f"   {k}: A {rep_a.get(k)!r}  C {rep_c.get(k)!r}")
    return 0 if not other else 2


if __name__ == "__main__":
    sys.exit(main())
