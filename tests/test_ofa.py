"""The `ofa` trainer on tiny real budgets: Lightning fit over phases, resume after a kill with the MLflow history
holding both parts, the trained supernet (`tinyflow.supernet.Supernet`) scoring subnets equal to their extracted
static networks, clear errors, DDP."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient

from tiny_spaces import tiny_space
from tinyflow.errors import CheckpointError, ConfigError
from tinyflow.network import DeployedNetwork
from tinyflow.supernet import Supernet
from tinyflow.supernet.checkpoint import CKPT_KEY, load_supernet, read_checkpoint
from tinyflow.tracking import MlflowTracker, NullTracker
from tinyflow.training.evaluation import evaluate_accuracy
from tinyflow_plugins.data import DigitsData
from tinyflow_plugins.search_spaces import McunetSpace
from tinyflow_plugins.trainers.ofa import OfaModule, OfaOptions, OfaTrainer, Phase, parse_phases, scale_epochs

torch.set_num_threads(1)

PHASES = [
    {"name": "full", "epochs": 1, "lr": 0.05, "kernel": [5], "depth": [2], "expand": [3]},
    {"name": "shrink", "epochs": 1, "lr": 0.02, "random_subnets": 1, "sort_channels": True},
]


@pytest.fixture(scope="module")
def data() -> DigitsData:
    d = DigitsData(batch_size=32, eval_batch_size=100, max_train_samples=160, max_eval_samples=100, seed=0)
    d.setup()
    return d


def trainer(**kw) -> OfaTrainer:
    opts = dict(phases=PHASES, progress=False, recalib_batches=2, seed=0, limit_train_batches=3)
    opts.update(kw)
    return OfaTrainer(**opts)


class SimulatedKill(RuntimeError):
    pass


class KillAtEpoch(pl.Callback):
    """Dies when an epoch starts, as a killed job would (after the previous epoch's checkpoint was written)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise SimulatedKill(f"killed at epoch {self.epoch}")


def test_resume_after_first_phase_continues_and_mlflow_holds_both_parts(tmp_path, data):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    workdir = tmp_path / "train"
    space = tiny_space()

    first = MlflowTracker(uri=uri, experiment="ofa-resume")
    with pytest.raises(SimulatedKill), first.job(None, {}), first.stage("train"):
        trainer(callbacks=[KillAtEpoch(1)]).fit(space, data, str(workdir), first)
    ckpt = read_checkpoint(workdir / "last.ckpt")[CKPT_KEY]
    assert ckpt["epochs_done"] == 1 and ckpt["phase"] == "full" and not ckpt["complete"]
    steps_phase1 = read_checkpoint(workdir / "last.ckpt")["global_step"]
    assert steps_phase1 == 3

    second = MlflowTracker(uri=uri, experiment="ofa-resume")
    with second.job(None, {}), second.stage("train"):
        result = trainer(resume=True).fit(space, data, str(workdir), second)
    assert result.kind == "supernet" and result.network is None
    assert result.metrics["resumed_from_epoch"] == 1 and result.metrics["epochs"] == 2
    meta = read_checkpoint(result.checkpoint)[CKPT_KEY]
    history = meta["history"]
    assert [h["epoch"] for h in history] == [0, 1]  # epoch 0 restored from the checkpoint, not rerun
    assert [h["phase"] for h in history] == ["full", "shrink"]
    assert history[1]["global_step"] == 2 * steps_phase1
    assert meta["complete"] and meta["evaluation"] == {"recalib_batches": 2, "seed": 0}

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("ofa-resume")
    stage_runs = client.search_runs([exp.experiment_id], "tags.stage = 'train'", order_by=["attributes.start_time"])
    assert [r.info.status for r in stage_runs] == ["FAILED", "FINISHED"]
    steps = [[m.step for m in client.get_metric_history(r.info.run_id, "val_acc_largest")] for r in stage_runs]
    assert steps == [[0], [1]]
    assert client.get_metric_history(stage_runs[1].info.run_id, "shrink.val_acc_smallest")


def test_supernet_evaluate_equals_extracted_static_subnet(tmp_path, data):
    space = tiny_space()
    t = trainer(resolutions=[12, 16], val_images=7)  # elastic resolution: random subnets train at 12 or 16
    result = t.fit(space, data, str(tmp_path), NullTracker())
    assert set(result.metrics) >= {"val_acc_largest", "val_acc_smallest", "val_acc_random"}
    # the final figures' n is the images they were measured on (their intervals), not the val split's size
    assert result.metrics["val_images"] == 7
    assert all(round(result.metrics[f"val_acc_{k}"] * 7, 6).is_integer() for k in ("largest", "smallest", "random"))
    supernet = Supernet.load(result.checkpoint, data)  # what search and finetune do: the checkpoint alone
    assert supernet.space.max_arch() == space.max_arch() and supernet.stem == {"stem": "conv"}
    assert supernet.evaluator.recalib_batches == 2  # as the trainer recalibrated (recorded in the checkpoint)
    rng = random.Random(1)
    for arch in (space.max_arch(), space.min_arch(), space.sample(rng)):
        acc = supernet.evaluate(arch)
        assert supernet.evaluate(arch) == acc  # cached
        static = supernet.extract(arch)
        assert evaluate_accuracy(static, data.val_dataloader()) == pytest.approx(acc, abs=1e-9)
        assert supernet.network(arch) == DeployedNetwork.plain(arch)
    small = replace(space.sample(rng), resolution=12)
    static = supernet.extract(small)
    data.set_resolution(12)
    assert evaluate_accuracy(static, data.val_dataloader()) == pytest.approx(supernet.evaluate(small), abs=1e-9)
    data.set_resolution(16)
    assert t.module.step_archs(t.module.phases[1], 0)[2].resolution in (12, 16)
    # the same calibration images as the trainer's own evaluator, so a second load scores the same
    arch = space.min_arch()
    for a, b in zip(supernet.calibration_batches(16), t.module.evaluator.calibration_batches(16)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    again = Supernet.load(result.checkpoint, data)
    assert again.evaluate(arch) == pytest.approx(supernet.evaluate(arch), abs=1e-9)


def test_corrupt_or_foreign_checkpoint_is_a_clear_error(tmp_path, data):
    space = tiny_space()
    t = trainer(phases=PHASES[:1])
    good = Path(t.fit(space, data, str(tmp_path / "a"), NullTracker()).checkpoint)

    truncated = tmp_path / "b" / "last.ckpt"
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        trainer(resume=True).fit(space, data, str(truncated.parent), NullTracker())
    with pytest.raises(CheckpointError, match=str(truncated)):
        load_supernet(truncated)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        Supernet.load(garbage, data)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_supernet(tmp_path / "missing.ckpt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a tinyflow supernet checkpoint"):
        load_supernet(foreign)
    # resuming a run of another space
    with pytest.raises(CheckpointError, match="another search space"):
        trainer(resume=True).fit(tiny_space(width_mult=0.5), data, str(tmp_path / "a"), NullTracker())


def test_phase_config_errors_name_the_field():
    space = tiny_space()
    with pytest.raises(ConfigError, match=r"phases\[0\]\.kernel"):
        parse_phases([{"name": "full", "epochs": 1, "lr": 0.1, "kernel": [7]}], space)
    with pytest.raises(ConfigError, match="unknown key"):
        parse_phases([{"name": "full", "epochs": 1, "lr": 0.1, "kernels": [3]}], space)
    with pytest.raises(ConfigError, match="lr"):
        parse_phases([{"name": "full", "epochs": 1, "lr": 0.0}], space)
    with pytest.raises(ConfigError, match="unknown option"):
        OfaTrainer(phases=PHASES, learning_rate=0.1)


def test_phase_resolution_scale_trains_smaller_images(tmp_path, data):
    """Progressive resizing: a phase with `resolution_scale` feeds the subnets images at that share of their
    resolution (a multiple of 8); the per-epoch figures and the checkpoint keep the full resolution."""
    space = tiny_space()
    assert Phase("p", 1, 0.1, resolution_scale=0.67).step_resolution(48) == 32
    assert Phase("p", 1, 0.1, resolution_scale=0.67).step_resolution(64) == 40
    assert Phase("p", 1, 0.1).step_resolution(44) == 44
    with pytest.raises(ConfigError, match=r"phases\[0\]\.resolution_scale"):
        parse_phases([{"name": "full", "epochs": 1, "lr": 0.1, "resolution_scale": 1.5}], space)
    seen: list[int] = []

    class Sizes(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            handle = pl_module.supernet.stem.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[-1]))
            self.handle = handle

        def on_train_batch_end(self, trainer, pl_module, *args):
            self.handle.remove()

    phases = [{**PHASES[0], "resolution_scale": 0.5}, PHASES[1]]
    t = trainer(phases=phases, callbacks=[Sizes()])
    result = t.fit(space, data, str(tmp_path), NullTracker())
    full = space.resolution
    assert seen[:3] == [max(8, 8 * round(full * 0.5 / 8))] * 3  # the scaled phase, 3 steps of one subnet
    # the next phase at the subnets' own resolution; the stem runs once a step for the step's 3 subnets
    assert seen[3:] == [full] * 3
    assert 0 <= result.metrics["val_acc_largest"] <= 1


def test_a_step_runs_the_shared_layers_once_with_the_gradients_of_one_pass_per_subnet(data):
    """The sandwich step computes stem and first block once for its subnets (`prefix` / `suffix`): the loss and every
    gradient are those of a full forward per subnet, to float rounding."""
    space = tiny_space()
    torch.manual_seed(0)
    from tinyflow.nn.elastic import ElasticSupernet

    net = ElasticSupernet(space).train()
    x, y = next(iter(data.train_dataloader()))
    archs = [space.max_arch(), space.min_arch(), space.sample(random.Random(2))]

    def grads(shared: bool) -> tuple[float, list[torch.Tensor]]:
        net.zero_grad()
        h = net.prefix(x) if shared else None
        total = x.new_zeros(())
        for arch in archs:
            net.set_active(arch)
            total = total + torch.nn.functional.cross_entropy(net.suffix(h) if shared else net(x), y)
        total.backward()
        return float(total), [p.grad.clone() for p in net.parameters() if p.grad is not None]

    loss_each, grads_each = grads(False)
    loss_once, grads_once = grads(True)
    assert loss_once == pytest.approx(loss_each, rel=1e-6)
    assert len(grads_once) == len(grads_each)
    for a, b in zip(grads_once, grads_each):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_per_epoch_figures_every_epoch_or_at_phase_ends(tmp_path, data):
    space = tiny_space()
    phases = [{**PHASES[0], "epochs": 2}, PHASES[1]]
    for every, scored in (("phase", [1, 2]), ("epoch", [0, 1, 2])):
        result = trainer(phases=phases, val_every=every).fit(space, data, str(tmp_path / every), NullTracker())
        history = read_checkpoint(result.checkpoint)[CKPT_KEY]["history"]
        assert [h["epoch"] for h in history] == [0, 1, 2]  # every epoch has its loss and time
        assert [h["epoch"] for h in history if "val_acc_largest" in h] == scored
        assert "val_acc_largest" in result.metrics
    with pytest.raises(ConfigError, match="val_every"):
        trainer(val_every="step")


def test_fit_input_errors(tmp_path, data):
    with pytest.raises(ConfigError, match="batch_size"):
        trainer(batch_size=1).fit(tiny_space(), data, str(tmp_path), NullTracker())
    with pytest.raises(ConfigError, match="num_classes"):
        trainer().fit(tiny_space(num_classes=1000), data, str(tmp_path), NullTracker())


def test_scale_epochs_spreads_a_total_budget():
    phases = [Phase("a", 6, 0.1), Phase("b", 2, 0.1), Phase("c", 2, 0.1), Phase("d", 3, 0.1)]
    assert [p.epochs for p in scale_epochs(phases, None)] == [6, 2, 2, 3]
    assert [p.epochs for p in scale_epochs(phases, 4)] == [1, 1, 1, 1]
    assert [p.epochs for p in scale_epochs(phases, 26)] == [12, 4, 4, 6]
    assert sum(p.epochs for p in scale_epochs(phases, 7)) == 7
    with pytest.raises(ConfigError, match="fewer than the 4 phases"):
        scale_epochs(phases, 3)


def test_sandwich_archs_depend_only_on_the_step(data):
    space = tiny_space()
    phases = parse_phases(PHASES, space)
    a = OfaModule(space, phases, OfaOptions(seed=3), data)
    b = OfaModule(space, phases, OfaOptions(seed=3), data)
    for step in range(5):
        archs = a.step_archs(phases[1], step)
        assert [x.key() for x in archs] == [x.key() for x in b.step_archs(phases[1], step)]
        assert archs[0] == space.max_arch() and archs[1] == space.min_arch()
    assert len(a.step_archs(phases[0], 0)) == 1  # the full phase: largest == smallest


class RecordSubnets(pl.Callback):
    """Each rank writes the subnets it trained per step and a digest of its final weights."""

    def __init__(self, out: str):
        self.out = out
        self.keys: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        phase = pl_module.phase_at(trainer.current_epoch)[1]
        archs = pl_module.step_archs(phase, trainer.global_step)
        self.keys.append(hashlib.sha1("|".join(a.key() for a in archs).encode()).hexdigest())

    def on_train_end(self, trainer, pl_module):
        digest = hashlib.sha1()
        for p in pl_module.supernet.parameters():
            digest.update(p.detach().contiguous().numpy().tobytes())
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(
            json.dumps({"keys": self.keys, "weights": digest.hexdigest(), "world": trainer.world_size})
        )


@pytest.mark.slow
def test_ddp_two_cpu_processes_sample_the_same_subnets(tmp_path, data):
    space = tiny_space()
    t = trainer(strategy="ddp", devices=2, callbacks=[RecordSubnets(str(tmp_path))], limit_train_batches=2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri=uri, experiment="ofa-ddp")
    with tracker.job(None, {}), tracker.stage("train"):
        result = t.fit(space, data, str(tmp_path / "train"), tracker)
        run_id = tracker.run_id
    # rank 0 trained in a spawned process; its per-epoch figures reached this process's MLflow run
    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, "val_acc_largest")
    assert sorted(m.step for m in history) == [0, 1]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == 2
    assert len(ranks[0]["keys"]) == 4 and ranks[0]["keys"] == ranks[1]["keys"]
    assert len(set(ranks[0]["keys"][2:])) > 1  # random subnets differ between steps, not between ranks
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients were all-reduced
    assert [h["epoch"] for h in read_checkpoint(result.checkpoint)[CKPT_KEY]["history"]] == [0, 1]
    assert 0.0 <= Supernet.load(result.checkpoint, data).evaluate(space.min_arch()) <= 1.0


def compose_cfg(*overrides: str):
    from hydra import compose, initialize_config_dir

    import tinyflow

    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["tracking=none", *overrides])


def test_search_space_plugins_from_config_bind_to_the_data(data):
    from tinyflow.contracts import SearchSpace
    from tinyflow.plugins import build_plugin

    space = build_plugin(compose_cfg(), "search_space").bind(data)
    assert isinstance(space, SearchSpace) and isinstance(space, McunetSpace)
    assert (space.in_channels, space.num_classes, space.width_mult, space.resolution) == (1, 10, 0.5, 32)
    assert space.max_arch().in_channels == 1 and space.with_width_resolution(0.35, 24).bind(data).resolution == 24
    trainer = build_plugin(compose_cfg("debug=fast"), "trainer")
    assert trainer.name == "ofa" and trainer.options.epochs == 4
    fixed = build_plugin(compose_cfg("search_space=mobilenetv2"), "search_space").bind(data)
    assert isinstance(fixed, SearchSpace) and fixed.sample(random.Random(0)) == fixed.max_arch()
    assert fixed.max_arch().num_classes == 10 and fixed.max_arch().name == "mobilenetv2"
    with pytest.raises(ConfigError, match=r"search_space\.kernel_choices"):
        build_plugin(compose_cfg("search_space.kernel_choices=[2,3]"), "search_space")
