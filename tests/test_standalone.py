"""The standalone trainer: real Lightning training on tiny budgets, checkpoints, tracking and clear errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from tinyflow.arch import MBConvSpace
from tinyflow.contracts import Trainer
from tinyflow.errors import CheckpointError, ConfigError
from tinyflow.network import DeployedNetwork
from tinyflow.nn.static import StaticNet
from tinyflow.tracking import MlflowTracker, NullTracker
from tinyflow.training.checkpoint import load_checkpoint, load_static_model, save_checkpoint
from tinyflow.training.optim import build_optimizer, cosine_schedule
from tinyflow_plugins.data import DigitsData
from tinyflow_plugins.trainers.standalone import StandaloneTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SPACE = MBConvSpace(
    width_mult=0.25,
    resolution=16,
    in_channels=1,
    num_classes=10,
    head_channels=0,
    tail_channels=(),
    stages=({"width": 24, "stride": 2}, {"width": 32, "stride": 2}),
)
TINY = {"epochs": 2, "lr": 0.2, "warmup_epochs": 0, "label_smoothing": 0.0}


@pytest.fixture(scope="module")
def digits() -> DigitsData:
    return DigitsData(seed=0, batch_size=32)


@pytest.fixture(scope="module")
def trained(digits: DigitsData, tmp_path_factory: pytest.TempPathFactory) -> tuple[StandaloneTrainer, dict, Path]:
    workdir = tmp_path_factory.mktemp("standalone")
    trainer = StandaloneTrainer(arch="min", **TINY)
    result = trainer.fit(SPACE, digits, str(workdir), NullTracker())
    return trainer, result, workdir


def test_training_beats_chance_and_writes_model(trained, digits: DigitsData) -> None:
    trainer, result, workdir = trained
    assert isinstance(trainer, Trainer)
    assert result.kind == "model" and result.checkpoint == str(workdir / "model.pt")
    assert DeployedNetwork.from_dict(result.network) == DeployedNetwork.plain(SPACE.min_arch())
    assert result.metrics["val_accuracy"] > 0.5  # chance is 0.1 on ten classes
    test_acc = trainer.evaluate(SPACE.min_arch(), "test")
    assert test_acc > 0.5
    model, arch, metrics = load_static_model(workdir / "model.pt")
    assert arch == SPACE.min_arch() and metrics["val_accuracy"] == pytest.approx(result.metrics["val_accuracy"])
    digits.set_resolution(arch.resolution)
    x, _ = next(iter(digits.test_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), trainer.model(x))
    assert (workdir / "checkpoints" / "last.ckpt").is_file()


def test_evaluate_refuses_another_arch(trained) -> None:
    trainer, _, _ = trained
    with pytest.raises(ConfigError, match="another arch"):
        trainer.evaluate(SPACE.max_arch())


def test_training_is_deterministic(digits: DigitsData, tmp_path: Path) -> None:
    budget = {**TINY, "epochs": 1, "limit_train_batches": 3, "save_checkpoints": False}
    a = StandaloneTrainer(arch="min", **budget)
    b = StandaloneTrainer(arch="min", **budget)
    a.fit(SPACE, digits, str(tmp_path / "a"), NullTracker())
    b.fit(SPACE, digits, str(tmp_path / "b"), NullTracker())
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_resume_continues_from_last_checkpoint(digits: DigitsData, tmp_path: Path) -> None:
    budget = {**TINY, "limit_train_batches": 2}
    first = StandaloneTrainer(arch="min", **{**budget, "epochs": 1})
    first.fit(SPACE, digits, str(tmp_path), NullTracker())
    again = StandaloneTrainer(arch="min", resume=True, **{**budget, "epochs": 2})
    assert again.fit(SPACE, digits, str(tmp_path), NullTracker()).metrics["epochs"] == 2
    result = again.result  # the recipe's own result
    assert result["resumed_from"] and result["epochs"] == 2
    assert [h["epoch"] for h in result["history"]] == [1.0]  # only the second epoch ran


def test_init_weights_from_a_model_file(trained, digits: DigitsData, tmp_path: Path) -> None:
    trainer, _, workdir = trained
    budget = {**TINY, "epochs": 1, "lr": 1e-9, "limit_train_batches": 1, "save_checkpoints": False}
    warm = StandaloneTrainer(arch="min", init_weights=str(workdir / "model.pt"), **budget)
    warm.fit(SPACE, digits, str(tmp_path), NullTracker())
    # one step at a vanishing learning rate: the trainable weights are still the loaded ones
    loaded = dict(warm.model.named_parameters())
    for name, p in trainer.model.named_parameters():
        torch.testing.assert_close(loaded[name], p, atol=1e-6, rtol=0)


def test_corrupt_checkpoint_is_a_checkpoint_error(trained, tmp_path: Path) -> None:
    _, _, workdir = trained
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint at all")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((workdir / "model.pt").read_bytes()[:2000])
    for path in (garbage, truncated):
        with pytest.raises(CheckpointError, match="corrupt"):
            load_static_model(path)
        with pytest.raises(CheckpointError, match=path.name):
            StandaloneTrainer(arch="min", init_weights=str(path), **TINY).fit(
                SPACE, DigitsData(), str(tmp_path / "w"), NullTracker()
            )
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


def test_weights_of_another_arch_are_a_checkpoint_error(trained, tmp_path: Path) -> None:
    _, _, workdir = trained
    with pytest.raises(CheckpointError, match="another arch"):
        StandaloneTrainer(arch="max", init_weights=str(workdir / "model.pt"), **TINY).fit(
            SPACE, DigitsData(), str(tmp_path), NullTracker()
        )


def test_save_is_atomic_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"w": torch.ones(3)}, path)
    with pytest.raises(Exception):  # noqa: B017 - a lambda cannot be pickled: the write fails half way
        save_checkpoint({"w": torch.zeros(3), "f": lambda: 0}, path)
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_arch_data_mismatch_and_bad_options() -> None:
    rgb = MBConvSpace(width_mult=0.25, resolution=16, in_channels=3, num_classes=10, head_channels=0)
    with pytest.raises(ConfigError, match=r"search_space\.in_channels=1"):
        StandaloneTrainer(arch="min", **TINY).fit(rgb, DigitsData(), "/nonexistent", NullTracker())
    with pytest.raises(ConfigError, match="unknown option"):
        StandaloneTrainer(learning_rate=0.1)
    with pytest.raises(ConfigError, match="optimizer"):
        build_optimizer(StaticNet(SPACE.min_arch()), "lbfgs")


def test_cosine_schedule_warms_up_then_decays() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_schedule(opt, total_steps=10, warmup_steps=2, min_lr_ratio=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:]))
    assert lrs[-1] > 0.1


@pytest.mark.slow
def test_per_epoch_metrics_reach_mlflow(digits: DigitsData, tmp_path: Path, store_uri: str) -> None:
    tracker = MlflowTracker(uri=store_uri, experiment="standalone-test", log_config=False)
    budget = {**TINY, "limit_train_batches": 3, "save_checkpoints": False}
    with tracker.job(None, {"run_name": "t"}), tracker.stage("train") as t:
        StandaloneTrainer(arch="min", **budget).fit(SPACE, digits, str(tmp_path), t)
        run_id = t.child_id
    history = tracker.client.get_metric_history(run_id, "val_acc")
    assert [m.step for m in history] == [0, 1]
    assert all(0.0 <= m.value <= 1.0 for m in history)
    run = tracker.client.get_run(run_id)
    assert "final_val_accuracy" in run.data.metrics and run.data.params["trainer"] == "standalone"
