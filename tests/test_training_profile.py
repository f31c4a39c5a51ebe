"""The train stage's training profile (tinyflow.training.profile) and its compute budget (tinyflow.training.budget):
on tiny real Lightning runs of the stage (debug=fast, mnist5k), the profile's phases sum to the stage's measured wall
time and reach a real MLflow store; the epoch arithmetic of `trainer.epochs_at_resolution`, and that the stage
applies it and logs the effective epochs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from tinyflow import CONF_DIR
from tinyflow.context import RunContext
from tinyflow.errors import ConfigError
from tinyflow.plugins import build_plugin
from tinyflow.tracking import MlflowTracker, activate
from tinyflow.training.budget import epoch_budget
from tinyflow.training.profile import PHASES, TrainingProfile

#: the stage's tiny budget: 512 training images (4 batches of 128, 2 of them per epoch), 200 val images
TINY = ("debug=fast", "data=mnist5k", "stages=[train]", "cache.train=false")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread: None) -> None:
    """Two shared cores: one torch thread each (as the pipeline's share would be beside other jobs)."""


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def _run_train_stage(tmp_path: Path, *overrides: str) -> tuple[MlflowClient, str, str]:
    """The real train stage in a real MLflow sqlite store; (client, stage run id, parent run id)."""
    from tinyflow.stages.train import run

    cfg = _cfg(*TINY, f"cache.dir={tmp_path / 'cache'}", *overrides)
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    tracker = MlflowTracker(uri=uri, experiment="profile")
    with activate(tracker), tracker.job(cfg, {}):
        parent = tracker.parent_id
        with tracker.stage("train"):
            stage_id = tracker.child_id
            run(cfg, RunContext(output_dir=str(tmp_path / "run")))
    return MlflowClient(tracking_uri=uri), stage_id, parent


def _check_sums_to_the_stage_time(metrics: dict[str, float]) -> None:
    shares = {
        k.removeprefix("train.profile.").removesuffix("_share"): v for k, v in metrics.items() if k.endswith("_share")
    }
    seconds = {p: metrics[f"train.profile.{p}_s"] for p in shares}
    assert set(seconds) <= set(PHASES), seconds
    total = sum(seconds.values())
    assert total == pytest.approx(metrics["train.profile.total_s"], rel=1e-6)
    # the stage's own wall time (MlflowTracker.stage) also holds logging the profile itself: a few percent at most
    assert 0.95 * metrics["wall_time_s"] <= total <= metrics["wall_time_s"]
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
    for step_phase in ("data", "forward", "backward", "optimizer", "eval", "checkpoint", "setup"):
        assert seconds[step_phase] > 0, step_phase


def test_ofa_profile_sums_to_the_stage_time_and_the_budget_is_applied(tmp_path: Path) -> None:
    # 8 epochs budgeted at r16 on the default space's r32: 8 x (16/32)^2 = 2, at least one per phase: 4 epochs
    client, stage_id, parent = _run_train_stage(tmp_path, "trainer.epochs=8", "trainer.epochs_at_resolution=16")
    run = client.get_run(stage_id)
    metrics = run.data.metrics
    _check_sums_to_the_stage_time(metrics)
    assert metrics["train.profile.bn_recalib_s"] > 0
    for label in ("largest", "smallest", "random"):  # per subnet, in the per-epoch evaluation
        assert metrics[f"train.profile.eval.{label}_s"] > 0
        assert metrics[f"train.profile.bn_recalib.{label}_s"] > 0
    assert metrics["train.profile.steps"] == 4 * 2  # 4 epochs of 2 batches (debug=fast limit_train_batches)
    assert metrics["train.profile.images"] == 4 * 2 * 128
    assert metrics["train.profile.images_per_s"] > 0
    assert metrics["train.profile.images_per_s_per_core"] <= metrics["train.profile.images_per_s"]
    assert metrics["train.epochs_configured"] == 8 and metrics["train.epochs_effective"] == 4
    assert metrics["train.epochs_at_resolution"] == 16
    assert "8 x (16/32)^2 = 2.00" in run.data.tags["train.epochs_reason"]
    parent_run = client.get_run(parent)
    assert "train.epochs_effective" not in parent_run.data.metrics  # the stage's figures stay on the stage's run
    assert not any(k.startswith("train.profile.") for k in parent_run.data.metrics)
    assert "4 epochs" in parent_run.data.tags["train.epochs_reason"]
    # the trainer trained what the budget says: the checkpoint's epochs, spread over the four phases
    from tinyflow.supernet.checkpoint import CKPT_KEY, read_checkpoint

    ckpt = read_checkpoint(tmp_path / "run" / "train" / "supernet.ckpt")[CKPT_KEY]
    assert ckpt["epochs_done"] == 4 and [p["epochs"] for p in ckpt["phases"]] == [1, 1, 1, 1]
    text = client.download_artifacts(stage_id, "train_profile.txt", str(tmp_path))
    assert Path(text).read_text().startswith("train profile: ")


def test_standalone_profile_counts_lightnings_validation_as_eval(tmp_path: Path) -> None:
    client, stage_id, _ = _run_train_stage(tmp_path, "trainer=standalone", "trainer.epochs=2")
    metrics = client.get_run(stage_id).data.metrics
    _check_sums_to_the_stage_time(metrics)
    assert metrics["train.profile.steps"] == 2 * 2
    assert metrics["train.epochs_effective"] == 2  # standalone: epochs_at_resolution null, the epochs as given


# ---- the timeline ----------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_timeline_is_exclusive_and_nested_phases_return() -> None:
    clock = FakeClock()
    prof = TrainingProfile(clock=clock)
    clock.t = 1.0
    prof.switch("forward")
    clock.t = 3.0
    with prof.subnet("largest"), prof.phase("bn_recalib"):
        clock.t = 3.5
        with prof.phase("eval"):
            clock.t = 4.5
        clock.t = 5.0
    clock.t = 6.0
    prof.count_step(10)
    prof.stop()
    clock.t = 9.0  # after stop: nothing more is counted
    prof.stop()
    assert dict(prof.seconds) == {"setup": 1.0, "forward": 3.0, "bn_recalib": 1.0, "eval": 1.0}
    assert dict(prof.by_subnet) == {("bn_recalib", "largest"): 1.0, ("eval", "largest"): 1.0}
    assert prof.total_s == 6.0 and prof.images == 10 and prof.steps == 1
    metrics = prof.metrics()
    assert metrics["train.profile.forward_share"] == 0.5
    assert metrics["train.profile.eval.largest_s"] == 1.0
    assert prof.summary().startswith("train profile: 6.0 s = setup 1.0 s (17 %), forward 3.0 s (50 %)")


# ---- the compute budget ------------------------------------------------------------------------------------------


def test_epoch_budget_arithmetic() -> None:
    at64 = epoch_budget(14, 48, 64, minimum=4)  # the headline command: the space stage picks r64
    assert at64.effective == 8 and at64.scaled  # 14 x (48/64)^2 = 7.875 -> 8
    assert "14 x (48/64)^2 = 7.88 -> 8 epochs" in at64.reason
    assert epoch_budget(14, 48, 48).effective == 14  # the default job: unchanged
    assert epoch_budget(14, 48, 32).effective == 14  # never raised at a smaller resolution
    assert epoch_budget(14, None, 128).effective == 14  # null: the epochs as given
    assert epoch_budget(60, 48, 80).effective == 22  # 60 x 0.36 = 21.6
    assert epoch_budget(4, 48, 96, minimum=4).effective == 4  # at least one per phase
    assert epoch_budget(3, 48, 96, minimum=4).effective == 3  # ... and never more than configured
    assert epoch_budget(2, 16, 24).effective == 1  # 2 x 4/9 = 0.89 -> 1
    # elastic resolution: R^2 is the mean of the choices' squares (one drawn per batch)
    elastic = epoch_budget(14, 48, [32, 40, 48, 64])
    assert elastic.resolution == pytest.approx(((32**2 + 40**2 + 48**2 + 64**2) / 4) ** 0.5, abs=0.01)
    assert elastic.effective == 14  # rms 47.6 <= 48
    assert epoch_budget(14, 48, [48, 64]).effective == 10  # 14 x 2304 / 3200 = 10.08
    for bad in (0, -48, True):
        with pytest.raises(ConfigError, match="epochs_at_resolution"):
            epoch_budget(14, bad, 64)
    from tinyflow.config_schema import validate_config

    with pytest.raises(ConfigError, match=r"epochs_at_resolution = 0 must be at least 1"):
        validate_config(_cfg("trainer.epochs_at_resolution=0"))  # before any stage runs


def test_the_ofa_trainer_spreads_the_budgeted_epochs_over_its_phases() -> None:
    cfg = _cfg()
    assert cfg.trainer.epochs_at_resolution == 48  # the default: the default job (r48) trains its 14 epochs
    trainer = build_plugin(cfg, "trainer")
    space = build_plugin(cfg, "search_space")
    phases, budget = trainer.phases_and_budget(space.with_width_resolution(0.5, 64))
    assert budget.configured == 14 and budget.effective == 8
    assert [(p.name, p.epochs) for p in phases] == [("full", 4), ("kernel", 1), ("depth", 1), ("expand", 2)]
    phases, budget = trainer.phases_and_budget(space.with_width_resolution(0.5, 48))
    assert not budget.scaled and [p.epochs for p in phases] == [6, 2, 2, 4]
    assert (
        build_plugin(_cfg("trainer.epochs_at_resolution=null"), "trainer")
        .epoch_budget(space.with_width_resolution(0.5, 64))
        .effective
        == 14
    )
