"""`mlflow server`: runs of a finished job read back through the REST API, and a pipeline logging to a server
(`tracking.uri=http://...`) whose artifacts are proxied, so jobs on other machines need no shared disk."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import cli_env
from mlflow_server import mlflow_server


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_server_serves_the_job_runs(run_cli, store_uri: str, tmp_path: Path) -> None:
    res = run_cli("device=stm32f412", "stages=[stages_for_tests:ok]")
    assert res.returncode == 0, res.stderr
    with mlflow_server(store_uri, tmp_path / "server") as server:
        base = server.url
        exp = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=tinyflow")["experiment"]
        runs = _post(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    parents = [t for t in tags if "mlflow.parentRunId" not in t]
    children = [t for t in tags if "mlflow.parentRunId" in t]
    assert len(parents) == 1 and parents[0]["device"] == "stm32f412"
    assert len(children) == 1 and children[0]["stage"] == "stages_for_tests:ok"
    assert all(r["info"]["status"] == "FINISHED" for r in runs)


@pytest.mark.slow
def test_pipeline_logs_to_a_tracking_server(tmp_path: Path) -> None:
    """Parent and stage runs, metrics, a figure and the ONNX models land in the server's store and artifact root;
    the job writes nothing of MLflow's on its own disk."""
    from mlflow.tracking import MlflowClient

    server_dir, client_dir = tmp_path / "server", tmp_path / "client"
    client_dir.mkdir()
    artifacts = server_dir / "artifacts"
    store = f"sqlite:///{(server_dir / 'store.db').as_posix()}"
    with mlflow_server(store, server_dir, artifacts=artifacts) as server:
        cmd = [sys.executable, "-m", "tinyflow", "experiment=baseline", "debug=fast", "data=mnist5k"]
        cmd += ["device=stm32f412", f"tracking.uri={server.url}", f"hydra.run.dir={client_dir / 'run'}"]
        cmd += [f"cache.dir={client_dir / 'cache'}"]
        res = subprocess.run(cmd, cwd=client_dir, env=cli_env(), capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

        client = MlflowClient(tracking_uri=server.url)
        exp = client.get_experiment_by_name("tinyflow")
        assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location  # proxied
        runs = client.search_runs([exp.experiment_id])
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1
        parent = parents[0]
        stages = {r.data.tags["stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
        assert set(stages) == {"train", "quantize", "schedule", "deploy"}
        assert all(r.info.status == "FINISHED" for r in runs)
        assert {"accuracy_int8", "arena_bytes", "flash_bytes"} <= set(parent.data.metrics)
        assert parent.data.metrics["sram_budget_bytes"] == 256 * 1024  # the STM32F412's SRAM (no reserve)
        assert "memory_profile.png" in {a.path for a in client.list_artifacts(stages["schedule"].info.run_id)}
        # the figure, read back through the server, is the PNG the job drew
        png = Path(client.download_artifacts(stages["schedule"].info.run_id, "memory_profile.png", str(tmp_path)))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        models = client.search_logged_models(experiment_ids=[exp.experiment_id])
        assert {m.name for m in models} == {"model_int8", "model_float"}
        import mlflow.onnx

        mlflow.set_tracking_uri(server.url)
        model = mlflow.onnx.load_model(f"models:/{next(m for m in models if m.name == 'model_int8').model_id}")
        assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)  # the int8 file, through the proxy

    stored = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert {"memory_profile.png", "model.onnx", "config.yaml"} <= stored, sorted(stored)
    local = [*client_dir.rglob("mlruns"), *client_dir.rglob("mlartifacts")]
    assert not local, f"artifacts written on the job's disk: {local}"
