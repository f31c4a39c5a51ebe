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


class _Crash(Exception):
    pass


def test_a_standalone_training_resumed_after_a_crash_ends_with_the_uninterrupted_weights(
    tmp_path: Path, monkeypatch
) -> None:
    """The standalone recipe (Lightning's ModelCheckpoint `last.ckpt`): interrupted at the start of its third epoch,
    resumed with the same recipe, it ends with the same weights as a run that was never interrupted."""
    import pytorch_lightning as pl

    import tinyflow.training.classifier as classifier
    from test_standalone import SPACE
    from tinyflow.tracking import NullTracker
    from tinyflow_plugins.data import DigitsData
    from tinyflow_plugins.trainers.standalone import StandaloneTrainer

    budget = {
        "epochs": 3,
        "lr": 0.2,
        "warmup_epochs": 0,
        "label_smoothing": 0.0,
        "limit_train_batches": 3,
        "dropout": 0.1,
    }
    torch.set_num_threads(1)
    whole = StandaloneTrainer(arch="min", **budget)
    whole.fit(SPACE, DigitsData(seed=0, batch_size=32), str(tmp_path / "whole"), NullTracker())

    class CrashAt(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 2:
                raise _Crash

    make = classifier.make_trainer
    monkeypatch.setattr(classifier, "make_trainer", lambda *a, **k: make(a[0], a[1], [*a[2], CrashAt()], **k))
    with pytest.raises(_Crash):
        StandaloneTrainer(arch="min", **budget).fit(
            SPACE, DigitsData(seed=0, batch_size=32), str(tmp_path / "cut"), NullTracker()
        )
    monkeypatch.setattr(classifier, "make_trainer", make)
    torch.manual_seed(12345)  # whatever the process drew meanwhile: the checkpoint's generator state wins
    again = StandaloneTrainer(arch="min", resume=True, **budget)
    again.fit(SPACE, DigitsData(seed=0, batch_size=32), str(tmp_path / "cut"), NullTracker())
    assert again.result["resumed_from"] and [h["epoch"] for h in again.result["history"]] == [2.0]
    for (name, a), b in zip(whole.model.state_dict().items(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
