"""A real multirun over device SRAM × flash (stage `space` only) ends with the sweep summary: table, heatmaps,
an MLflow run; `python -m tinyflow.sweep_summary` redraws it from the directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, cli_env


@pytest.mark.slow
def test_multirun_summary(run_cli, tmp_path, store_uri):
    res = run_cli(
        "stages=[space]", "debug=fast", "device=custom", "device.sram_kb=2,64", "device.flash_kb=1024", multirun=True
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    root = tmp_path / "multirun"
    rows = json.loads((root / "sweep_summary.json").read_text())
    assert len(rows) == 2
    by = {(r["sram_kb"], r["flash_kb"]): r for r in rows}
    big, small = by[(64, 1024)], by[(2, 1024)]
    assert big["status"] == "ok" and big["width_mult"] is not None
    assert small["status"] != "ok" and small["width_mult"] is None  # 2 kB SRAM: nothing fits
    assert (root / "sweep_summary.png").stat().st_size > 0
    md = (root / "sweep_summary.md").read_text()
    assert "| job | sram_kb | flash_kb | width_mult | resolution |" in md
    client = MlflowClient(tracking_uri=store_uri)
    exp = client.get_experiment_by_name("tinyflow")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'sweep_summary'")
    assert len(runs) == 1
    assert runs[0].data.metrics["jobs"] == 2.0
    arts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"sweep_summary.md", "sweep_summary.png", "sweep_summary.json"} <= arts

    # by hand, files only
    (root / "sweep_summary.json").unlink()
    out = subprocess.run(
        [sys.executable, "-m", "tinyflow.sweep_summary", str(root), "--no-mlflow"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads((root / "sweep_summary.json").read_text()) == rows


def test_summary_of_a_non_sweep_dir_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "tinyflow.sweep_summary", str(tmp_path), "--no-mlflow"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "holds no Hydra jobs" in out.stderr
