"""One 4-job device sweep, launched with Ray and with joblib, each logging to its own `mlflow server`: wall times.

Both run the same jobs (the full pipeline on `debug=fast`, data=mnist5k, 4 SRAM sizes) two at a time: Ray on a
local instance of 2 CPUs with 1 CPU per job, joblib with `n_jobs=2`; each starts from an empty cache and store.
Prints each launcher's wall time, the jobs that finished and how many trained, and ends with
`ray_over_joblib_wall: <ratio> x`.

    .venv/bin/python benchmarks/bench_sweep_launchers.py [--out /tmp/bench_sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from mlflow_server import mlflow_server  # noqa: E402

SWEEP = (
    "debug=fast",
    "data=mnist5k",
    "space.resolutions=[32]",
    "device=custom",
    "device.sram_kb=64,128,256,512",
    "device.flash_kb=1024",
)
LAUNCHERS = {
    "ray": ("hydra/launcher=ray", "hydra.launcher.num_cpus=2", "hydra.launcher.cpus_per_job=1"),
    "joblib": ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
}


def run(name: str, out: Path) -> dict[str, object]:
    from mlflow.tracking import MlflowClient

    work = out / name
    work.mkdir(parents=True)
    store = f"sqlite:///{(work / 'store.db').as_posix()}"
    with mlflow_server(store, work / "server", artifacts=work / "artifacts") as server:
        cmd = [sys.executable, "-m", "tinyflow", "-m", *SWEEP, *LAUNCHERS[name], f"tracking.uri={server.url}"]
        cmd += [f"hydra.sweep.dir={work / 'multirun'}", f"cache.dir={work / 'cache'}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        (work / "sweep.log").write_text(res.stdout + res.stderr)
        if res.returncode != 0:
            raise SystemExit(f"{name} sweep failed (exit {res.returncode}); see {work / 'sweep.log'}")
        client = MlflowClient(tracking_uri=server.url)
        runs = client.search_runs([client.get_experiment_by_name("tinyflow").experiment_id])
    parents = [
        r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.data.tags.get("kind") != "sweep_summary"
    ]
    rows = json.loads((work / "multirun" / "sweep_summary.json").read_text())
    return {
        "wall_s": round(wall, 1),
        "jobs_ok": sum(r["status"] == "ok" for r in rows),
        "trainings": sum(r.data.tags.get("train.cache") == "miss" for r in parents),
        "parent_runs": len(parents),
        "summary_runs": sum(r.data.tags.get("kind") == "sweep_summary" for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=f"/tmp/bench_sweep_launchers_{os.getpid()}")
    args = parser.parse_args()
    out = Path(args.out)
    results = {name: run(name, out) for name in LAUNCHERS}
    for name, r in results.items():
        print(
            f"{name:7s} wall {r['wall_s']:7.1f} s   jobs ok {r['jobs_ok']}/4   trainings {r['trainings']}   "
            f"parent runs {r['parent_runs']}   summary runs {r['summary_runs']}"
        )
    print(f"ray_over_joblib_wall: {results['ray']['wall_s'] / results['joblib']['wall_s']:.2f} x")


if __name__ == "__main__":
    main()
