"""`mlflow server`: runs of a finished job read back through the REST API. A pipeline logging to a server
(`tracking.uri=http://...`, artifacts proxied) is tests/test_ray_sweep.py's sweep."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

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
