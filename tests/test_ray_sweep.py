"""`hydra/launcher=ray`: a sweep's jobs as Ray tasks on a local Ray instance of 2 CPUs, logging to an `mlflow server`
whose artifacts are proxied (`tracking.uri=http://...`: runs, metrics, figures and models, no disk in common).

The launcher is src/hydra_plugins/tinyflow_ray_launcher (why not hydra-ray-launcher: its docstring). Skipped
only when ray is not installed (it is in the `test` extra).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env
from mlflow_server import mlflow_server

pytest.importorskip("ray", reason="ray is not installed (it is in the `test` extra: pip install -e '.[test]')")

RAY = ("hydra/launcher=ray", "hydra.launcher.num_cpus=2", "hydra.launcher.cpus_per_job=1")
#: four devices, one trained network: the baseline pipeline (train, quantize, schedule, deploy) on debug=fast
SWEEP = (
    "experiment=baseline",
    "debug=fast",
    "data=mnist5k",
    "device=custom",
    "device.sram_kb=64,128,256,512",
    "device.flash_kb=1024",
)


def _sweep(tmp: Path, tracking_uri: str, *overrides: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tinyflow", "-m", *overrides, *RAY, f"tracking.uri={tracking_uri}"]
    cmd += [f"hydra.sweep.dir={tmp / 'multirun'}", f"cache.dir={tmp / 'cache'}"]
    return subprocess.run(cmd, cwd=tmp, env=cli_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_ray_sweep_logs_four_jobs_to_a_tracking_server(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    server_dir = tmp_path / "server"
    store = f"sqlite:///{(server_dir / 'store.db').as_posix()}"
    with mlflow_server(store, server_dir, artifacts=server_dir / "artifacts") as server:
        res = _sweep(tmp_path, server.url, *SWEEP)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        log = res.stdout + res.stderr
        assert "Ray: local instance, 2 CPUs on 1 node(s), 1 CPU(s) per job" in log
        client = MlflowClient(tracking_uri=server.url)
        exp = client.get_experiment_by_name("tinyflow")
        runs = client.search_runs([exp.experiment_id])
        # artifacts went through the server (proxied): a figure and the ONNX models read back from it
        assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location
        schedule = next(r for r in runs if r.data.tags.get("stage") == "schedule")
        png = Path(client.download_artifacts(schedule.info.run_id, "memory_profile.png", str(tmp_path)))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        models = client.search_logged_models(experiment_ids=[exp.experiment_id])
        # per job: the backend's two files on the deploy run, the deployed int8 model on the parent run
        assert sorted(m.name for m in models) == ["deployed_int8"] * 4 + ["model_float"] * 4 + ["model_int8"] * 4
        import mlflow.onnx

        mlflow.set_tracking_uri(server.url)
        int8 = mlflow.onnx.load_model(f"models:/{next(m for m in models if m.name == 'model_int8').model_id}")
        assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)

    summaries = [r for r in runs if r.data.tags.get("kind") == "sweep_summary"]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and r not in summaries]
    assert len(summaries) == 1 and summaries[0].data.metrics["jobs"] == 4
    assert sorted(r.data.params["device.sram_kb"] for r in parents) == ["128.0", "256.0", "512.0", "64.0"]
    assert all(r.info.status == "FINISHED" for r in runs)
    for parent in parents:
        stages = [r.data.tags["stage"] for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(stages) == ["deploy", "quantize", "schedule", "train"], stages
        assert "accuracy_int8" in parent.data.metrics
    # one training, shared: the same key everywhere, one job trained, the other three reused it
    assert len({r.data.tags["train.cache_key"] for r in parents}) == 1
    assert sorted(r.data.tags["train.cache"] for r in parents) == ["hit", "hit", "hit", "miss"]
    assert sorted(r.data.metrics["train_cache_hit"] for r in parents) == [0.0, 1.0, 1.0, 1.0]
    # each job ran in a Ray worker process (Ray prefixes a worker's output with its task name and pid)
    workers = set(re.findall(r"\(tinyflow_job pid=(\d+)\)", log))
    assert {r.data.tags["tinyflow.pid"] for r in parents} <= workers, workers
    rows = json.loads((tmp_path / "multirun" / "sweep_summary.json").read_text())
    assert [r["status"] for r in rows] == ["ok"] * 4
    stored = {p.name for p in (server_dir / "artifacts").rglob("*") if p.is_file()}
    assert {"memory_profile.png", "model.onnx", "config.yaml", "sweep_summary.png"} <= stored, sorted(stored)
    local = [*tmp_path.glob("mlruns"), *tmp_path.glob("mlartifacts")]
    assert not local, f"artifacts written on the jobs' disk: {local}"


@pytest.mark.slow
def test_a_job_whose_worker_dies_is_reported_failed(tmp_path: Path, store_uri: str) -> None:
    """A worker killed mid-job (as by the OOM killer) fails that job only; the summary names the reason."""
    crash = ("stages=[ray:crash_on_small_sram]", "device=custom", "device.sram_kb=64,256", "device.flash_kb=1024")
    res = _sweep(tmp_path, store_uri, *crash)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = {r["sram_kb"]: r for r in json.loads((tmp_path / "multirun" / "sweep_summary.json").read_text())}
    assert rows[256]["status"] == "ok"
    assert rows[64]["status"].startswith("failed: the Ray worker running this job died"), rows[64]["status"]


def test_a_job_on_another_machine_sends_its_small_files_back(tmp_path: Path) -> None:
    """What the sweep summary reads comes back from a node whose disk the launcher does not share; large files
    (checkpoints) stay there, and files the launching machine already has are left alone."""
    from hydra_plugins.tinyflow_ray_launcher.launcher import _MAX_FETCHED_FILE, _job_files, _write_missing

    worker, here = tmp_path / "worker" / "3", tmp_path / "here" / "3"
    (worker / ".hydra").mkdir(parents=True)
    (worker / ".hydra" / "config.yaml").write_text("device: {sram_kb: 64}\n")
    (worker / "report.json").write_text('{"fits": true}')
    (worker / "tinyflow.log").write_text("[t][tinyflow][INFO] - stage train: done\n")
    (worker / "train").mkdir()
    (worker / "train" / "supernet.ckpt").write_bytes(b"x" * 10)
    (worker / "big.onnx").write_bytes(b"x" * (_MAX_FETCHED_FILE + 1))
    files = _job_files(str(worker))
    assert sorted(files) == [".hydra/config.yaml", "report.json", "tinyflow.log"]
    here.mkdir(parents=True)
    (here / "tinyflow.log").write_text("already here\n")
    assert _write_missing(str(here), files) == 2
    assert (here / ".hydra" / "config.yaml").read_text() == "device: {sram_kb: 64}\n"
    assert (here / "tinyflow.log").read_text() == "already here\n"
    assert not list(here.glob(".*.tmp")) and not (here / "train").exists()
