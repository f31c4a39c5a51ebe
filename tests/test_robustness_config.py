"""Issue 16, item 8: every config value is checked before the first stage runs (a schema per group), and an error
before the network is built still leaves a FAILED MLflow run in `tinyflow.analyze`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

import tinyflow
from conftest import REPO, cli_env
from robustness_stages import plain
from tinyflow.config_schema import validate_config
from tinyflow.errors import ConfigError


def _compose(*overrides: str):
    with initialize_config_dir(str(tinyflow.CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["seed=1.5"], "seed = 1.5 must be an integer"),
        (["backend.latency_runs=0"], "backend.latency_runs = 0 must be at least 1"),
        (["+space.widht=[0.5]"], "space.widht: unknown key"),
        (["space.min_fit_share=2"], "space.min_fit_share = 2 must be at most 1"),
        (["finetune.optimizer=adam"], "finetune.optimizer = 'adam' must be one of sgd, adamw"),
        (["trainer.epochs=many"], "trainer.epochs = 'many' must be an integer"),
        (["strategy.population=1"], "strategy.population = 1 must be at least 2"),
        (["trainer=standalone", "trainer.lr=fast"], "trainer.lr = 'fast' must be a number"),
        (["cache.train=maybe"], "cache.train = 'maybe' must be true/false"),
    ],
)
def test_a_bad_value_is_named_by_its_group_schema(overrides: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match="nothing has run yet") as info:
        validate_config(_compose(*overrides))
    assert named in str(info.value)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["debug=fast", "data=mnist5k"],
        ["experiment=cluttered_large"],
        ["trainer=standalone"],
        ["scheduler=patch"],
        ["scheduler=rnnpool", "trainer.stem=rnnpool"],
        ["strategy=optuna"],
        ["strategy=random"],
        ["data=cifar10"],
        ["search_space=mobilenetv2"],
        ["tracking=none"],
    ],
)
def test_the_shipped_configs_pass(overrides: list[str]) -> None:
    validate_config(_compose(*overrides))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "named"), [("seed=1.5", "seed = 1.5"), ("backend.latency_runs=0", "backend.latency_runs = 0")]
)
def test_a_bad_value_fails_the_job_before_any_stage(tmp_path: Path, override: str, named: str) -> None:
    """`seed=1.5` ran as seed 1 (MLflow recorded 1.5); `backend.latency_runs=0` failed at stage 7 after training."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [
        sys.executable,
        "-m",
        "tinyflow",
        override,
        "stages=[stages_for_tests:ok]",
        f"tracking.uri={store}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    res = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert named in plain(res.stderr) and "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "context.json").exists()  # no stage ran
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("tinyflow").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"] and named in runs[0].data.tags["error"]


@pytest.mark.slow
def test_analyze_records_a_failed_run_when_the_network_cannot_be_built(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [
        sys.executable,
        "-m",
        "tinyflow.analyze",
        "network=onnx",
        f"network.path={tmp_path / 'missing.onnx'}",
        f"tracking.uri={store}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    res = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr[-2000:]
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("tinyflow").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]  # the job and its analyze stage
    assert all("missing.onnx" in r.data.tags["error"] for r in runs)
