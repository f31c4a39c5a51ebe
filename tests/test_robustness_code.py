"""Issue 16, nothing runs that was not asked for: stage names, `_target_`, checkpoints and CIFAR-10 batches cannot
run code; artifacts and file modes land where and how they should (items 9 and 10)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import cli_env
from robustness_stages import plain
from tinyflow.atomic import atomic_path, atomic_write_text
from tinyflow.errors import CheckpointError, ConfigError, DataError
from tinyflow.plugins import build_plugin, refuse_code_overrides
from tinyflow.stages import get_stage


class Payload:
    """Unpickling this creates `path` (a stand-in for any code a file could run)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "tinyflow",
        *args,
        f"hydra.run.dir={tmp_path / 'run'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    return subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)


def test_a_stage_string_imports_nothing(tmp_path: Path) -> None:
    """`stages=[this:nothing]` used to import `this` (printing the Zen of Python) and call its attribute."""
    res = _cli(tmp_path, "stages=[this:nothing]")
    assert res.returncode == 1
    assert "Beautiful is better than ugly" not in res.stdout + res.stderr
    message = plain(res.stderr)
    assert "unknown stage 'this:nothing'" in message and "tinyflow.stages" in message and "Traceback" not in message


def test_registry_holds_builtins_and_entry_points_only() -> None:
    assert get_stage("space").__module__ == "tinyflow.stages.space"
    assert get_stage("stages_for_tests:ok").__name__ == "ok"  # declared by tests/tinyflow_test_stages-*.dist-info
    before = set(sys.modules)
    with pytest.raises(Exception, match=r"unknown stage 'json\.tool:main'"):
        get_stage("json.tool:main")
    assert "json.tool" not in set(sys.modules) - before


def test_a_target_override_on_the_command_line_writes_no_file(tmp_path: Path) -> None:
    """`tracking._target_=shutil.copyfile '+tracking._args_=[a,b]'` copied a before the Protocol check failed."""
    (tmp_path / "a").write_text("secret")
    # tracking=none: its node has no other keys, so the old code called copyfile(a, b) (measured on 34c4e3d)
    res = _cli(
        tmp_path,
        "tracking=none",
        "tracking._target_=shutil.copyfile",
        "+tracking._args_=[a,b]",
        "stages=[stages_for_tests:ok]",
    )
    assert res.returncode == 2
    assert not (tmp_path / "b").exists()
    message = plain(res.stderr)
    assert "cannot set `tracking._target_`" in message and "Traceback" not in message
    with pytest.raises(ConfigError, match="_args_"):
        refuse_code_overrides(["+data._args_=[x]"])
    with pytest.raises(ConfigError, match=r"hydra\.callbacks"):
        refuse_code_overrides(["+hydra.callbacks.x._target_=os.system"])
    refuse_code_overrides(["device=stm32h7", "trainer.epochs=3", "stages=[space]"])  # values stay allowed


def test_a_target_outside_tinyflow_and_its_plugins_is_not_instantiated(tmp_path: Path) -> None:
    made = tmp_path / "made"
    cfg = OmegaConf.create({"tracking": {"_target_": "builtins.open", "_args_": [str(made), "w"]}})
    with pytest.raises(ConfigError, match="not code of tinyflow or an installed tinyflow plugin"):
        build_plugin(cfg, "tracking")
    assert not made.exists()
    nested = OmegaConf.create(
        {"trainer": {"_target_": "tinyflow.tracking.NullTracker", "x": {"_target_": "os.getcwd"}}}
    )
    with pytest.raises(ConfigError, match=r"trainer\.x\._target_"):
        build_plugin(nested, "trainer")


def test_checkpoints_are_read_without_running_code(tmp_path: Path) -> None:
    """`torch.load(weights_only=False)` was the default of `load_checkpoint` and of Lightning's resume."""
    from tinyflow.supernet.checkpoint import read_checkpoint
    from tinyflow.training.checkpoint import AtomicCheckpointIO, load_checkpoint, read_model

    made = tmp_path / "made"
    evil = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "x": Payload(made)}, evil)
    for read in (load_checkpoint, read_model, read_checkpoint):
        with pytest.raises(CheckpointError, match=str(evil)):
            read(evil)
    with pytest.raises(CheckpointError):  # Lightning asks for weights_only=False on resume; it gets True
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)
    assert not made.exists()


def _cifar_batch(path: Path, n: int = 4, payload: object | None = None) -> None:
    entry = {
        b"data": np.arange(n * 3072, dtype=np.uint8).reshape(n, 3072),
        b"labels": list(range(n)),
        b"batch_label": b"test",
        b"filenames": [b"f%d" % i for i in range(n)],
    }
    if payload is not None:
        entry[b"extra"] = payload
    path.write_bytes(pickle.dumps(entry, protocol=2))


def test_cifar10_batches_are_parsed_without_running_pickled_code(tmp_path: Path) -> None:
    from tinyflow_plugins.data.cifar10 import _read_batch

    _cifar_batch(tmp_path / "good")
    images, labels = _read_batch(tmp_path / "good")
    assert tuple(images.shape) == (4, 3, 32, 32) and labels.tolist() == [0, 1, 2, 3]
    made = tmp_path / "made"
    _cifar_batch(tmp_path / "evil", payload=Payload(made))
    with pytest.raises(DataError, match=r"refused to load (io|builtins)\.open"):
        _read_batch(tmp_path / "evil")
    assert not made.exists()


@pytest.mark.slow
def test_artifacts_go_beside_the_store_not_into_the_working_directory(tmp_path: Path) -> None:
    """Item 10: a job run from `tmp_path` with the store elsewhere left `<cwd>/mlruns`."""
    store = tmp_path / "store" / "mlflow.db"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "tinyflow",
        "stages=[stages_for_tests:ok]",
        f"tracking.uri=sqlite:///{store}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    res = subprocess.run(cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert not (cwd / "mlruns").exists()
    assert list((tmp_path / "store" / "mlartifacts").rglob("config.yaml"))


def test_atomic_writes_keep_the_usual_modes(tmp_path: Path) -> None:
    """Item 10: files written atomically were 0600 (mkstemp's), folders 0700."""
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
        with atomic_path(tmp_path / "d", directory=True) as folder:
            (folder / "inside").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
