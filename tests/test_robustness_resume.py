"""Issue 16, items 2 and 3 on a real training: SIGTERM during the supernet's training fails the job (exit 143, the
runs FAILED with the signal named — Lightning turned it into exit 0), and `resume=last` continues the training from
its last checkpoint in the new run's folder (it retrained from epoch 0) to the weights of an uninterrupted run; and
two jobs started together on a new store, twice, each finish in their own folder (scripts/concurrent_jobs.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO, cli_env

SMALL = [
    "debug=fast",
    "data=mnist5k",
    "space.widths=[0.35]",
    "space.resolutions=[32]",
    "trainer.epochs=4",
    "cache.train=false",
    "stages=[space,train]",
]


def _cmd(tmp_path: Path, run: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tinyflow",
        *SMALL,
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"hydra.run.dir={run}",
        *extra,
    ]


@pytest.mark.slow
def test_sigterm_in_training_then_resume_last_ends_where_an_uninterrupted_run_ends(tmp_path: Path) -> None:
    env = cli_env()
    whole = subprocess.run(
        _cmd(tmp_path, tmp_path / "whole"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert whole.returncode == 0, whole.stderr[-2000:]

    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        _cmd(tmp_path, runs / "cut"), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("[ofa] epoch 2 "):  # epochs 0-1 are in last.ckpt; epoch 2's is not yet written
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    cut = [r for r in client.search_runs(["1"]) if r.data.tags.get("output_dir") == str(runs / "cut")]
    assert [r.info.status for r in cut] == ["FAILED"]
    assert cut[0].data.tags["error"] == "JobInterrupted: interrupted by SIGTERM"

    resumed = subprocess.run(
        _cmd(tmp_path, runs / "again", "resume=last"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = (runs / "again" / "tinyflow.log").read_text()
    assert f"resuming from {runs / 'cut'}" in log and "Restoring states from the checkpoint path" in log
    epochs = [ln.split(" phase")[0] for ln in resumed.stdout.splitlines() if ln.startswith("[ofa] epoch")]
    assert epochs == ["[ofa] epoch 2", "[ofa] epoch 3"]  # at most one epoch (the interrupted one) trained again

    want = json.loads((tmp_path / "whole" / "context.json").read_text())["metrics"]
    got = json.loads((runs / "again" / "context.json").read_text())["metrics"]
    accs = [k for k in want if k.startswith("supernet_val_acc")]
    assert accs and {k: got[k] for k in accs} == {k: want[k] for k in accs}
    a = torch.load(tmp_path / "whole" / "train" / "supernet.ckpt", weights_only=True)["state_dict"]
    b = torch.load(runs / "again" / "train" / "supernet.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_jobs_at_once_on_a_new_store_twice(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "concurrent_jobs.py"), "--rounds", "2", "--out", str(tmp_path)],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 round(s) failed; 4 run folders, 4 distinct" in res.stdout
