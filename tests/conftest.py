"""Shared fixtures: a real MLflow sqlite store in a temp dir, and a runner for the `python -m tinyflow` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Two shared cores: one intra-op torch thread avoids oversubscription (results do not depend on it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    """A fresh sqlite MLflow store."""
    return f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("HYDRA_FULL_ERROR", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture
def run_cli(tmp_path: Path, store_uri: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run a tinyflow Hydra app in a subprocess with its outputs and MLflow store in tmp_path."""

    def run(
        *args: str, module: str = "tinyflow", multirun: bool = False, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        dirs = [f"hydra.sweep.dir={tmp_path / 'multirun'}"] if multirun else [f"hydra.run.dir={tmp_path / 'run'}"]
        if module == "tinyflow":  # the train cache stays in this test's tmp dir
            dirs.append(f"cache.dir={tmp_path / 'cache'}")
        cmd = [sys.executable, "-m", module, *args, f"tracking.uri={store_uri}", *dirs]
        if multirun:
            cmd.insert(3, "-m")
        return subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=timeout)

    return run


#: the full pipeline on debug=fast with a smaller space grid and search budget (well under a minute on 2 cores)
SMALL_PIPELINE = (
    "debug=fast",
    "data=mnist5k",  # the quick task: a few batches learn it (the default cluttered_mnist needs the full budget)
    "space.widths=[0.35,0.5]",
    "space.resolutions=[32]",
    "strategy.n_evaluations=16",
    "strategy.predictor.n_samples=20",
)


def run_small_pipeline(run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, *overrides: str):
    """Run every stage of SMALL_PIPELINE (+ overrides) with the `run_cli` of this test's `tmp_path`; check that it
    finished and return (run dir, context.json, report.json)."""
    import json

    res = run_cli(*overrides, *SMALL_PIPELINE)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = tmp_path / "run"
    ctx = json.loads((run / "context.json").read_text())
    report = json.loads((run / "report.json").read_text())
    assert ctx["completed"] == ["space", "train", "search", "finetune", "quantize", "schedule", "deploy"]
    return run, ctx, report
