"""Stage `finetune` on a composed config (debug=fast): from scratch, and from extracted supernet weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import tinyflow
from tinyflow.arch import MBConvSpace
from tinyflow.context import RunContext
from tinyflow.deploy.model import MissingStageError, load_final_model
from tinyflow.errors import ConfigError
from tinyflow.network import DeployedNetwork
from tinyflow.nn.elastic import ElasticSupernet, space_to_dict
from tinyflow.nn.rnnpool_net import RNNPoolNet
from tinyflow.nn.static import StaticNet
from tinyflow.plugins import build_plugin
from tinyflow.stages.finetune import run as finetune
from tinyflow.supernet import Supernet
from tinyflow.supernet.checkpoint import CKPT_KEY
from tinyflow.training.checkpoint import load_model, load_static_model, read_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SPACE = MBConvSpace(
    width_mult=0.25,
    resolution=20,
    in_channels=1,
    num_classes=10,
    head_channels=0,
    tail_channels=(),
    stages=({"width": 24, "stride": 2}, {"width": 32, "stride": 2}),
)


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["debug=fast", *overrides])


def write_supernet(path: Path, space: MBConvSpace = SPACE, seed: int = 3) -> Path:
    """A supernet checkpoint as a supernet trainer writes it (untrained weights, seeded)."""
    torch.manual_seed(seed)
    net = ElasticSupernet(space)
    meta = {
        "space": space_to_dict(space),
        "stem": net.stem_config,
        "dropout": 0.0,
        "evaluation": {"recalib_batches": 1, "seed": 0},
    }
    torch.save({"state_dict": {f"supernet.{k}": v for k, v in net.state_dict().items()}, CKPT_KEY: meta}, path)
    return path


def test_finetune_from_scratch_writes_model_and_accuracy(tmp_path: Path) -> None:
    cfg = _cfg(
        "data=mnist5k",
        "finetune.epochs=2",
        "finetune.limit_train_batches=null",
        "finetune.lr=0.2",
        "data.batch_size=32",
    )
    arch = SPACE.min_arch()
    ctx = finetune(cfg, RunContext(output_dir=str(tmp_path), arch=arch.to_dict()))
    assert ctx.model_checkpoint == str(tmp_path / "model.pt")
    assert ctx.metrics["accuracy_float"] > 0.3  # 512 training images, 2 epochs; chance is 0.1
    loaded_arch, model = load_final_model(ctx, "quantize")  # what the next stages read
    assert loaded_arch == arch and isinstance(model, StaticNet)
    assert "finetune_test_accuracy_before" not in ctx.metrics


def test_finetune_starts_from_the_extracted_supernet_weights(tmp_path: Path) -> None:
    arch = SPACE.min_arch()
    ckpt = write_supernet(tmp_path / "supernet.ckpt")
    cfg = _cfg("finetune.lr=1e-9")
    ctx = RunContext(output_dir=str(tmp_path / "run"), arch=arch.to_dict(), supernet_checkpoint=str(ckpt))
    ctx = finetune(cfg, ctx)
    assert "finetune_test_accuracy_before" in ctx.metrics
    source = Supernet.load(ckpt, build_plugin(cfg, "data")).extract(arch)
    tuned, tuned_arch, _ = load_static_model(ctx.model_checkpoint)
    assert isinstance(tuned, StaticNet) and tuned_arch == arch
    for (name, p), q in zip(tuned.named_parameters(), source.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)  # started from them; lr ~0 kept them
    # the run and model.pt record the same network: the supernet's plain one (scheduler=layer keeps it)
    recorded = read_model(ctx.model_checkpoint).network
    assert ctx.network is not None and DeployedNetwork.from_dict(ctx.network).to_arch() == arch
    assert recorded.kind == ctx.network["kind"] == "static" and recorded.to_arch() == arch


def test_finetune_rewrites_the_supernet_subnet_for_a_rewriting_scheduler(tmp_path: Path) -> None:
    """scheduler=rnnpool deploys the RNNPool network of the plain subnet: what carries over is copied from the
    extracted subnet (init_from_static), RNNPool is seeded fresh, and the run records the rnnpool network."""
    space = MBConvSpace(
        width_mult=0.25, resolution=24, in_channels=1, num_classes=10, head_channels=0, tail_channels=()
    )
    arch = space.max_arch()
    ckpt = write_supernet(tmp_path / "supernet.ckpt", space)
    cfg = _cfg("scheduler=rnnpool", "finetune.lr=1e-9", "scheduler.patch=4", "scheduler.stride=2")
    ctx = RunContext(output_dir=str(tmp_path / "run"), arch=arch.to_dict(), supernet_checkpoint=str(ckpt))
    ctx = finetune(cfg, ctx)
    assert ctx.network["kind"] == "rnnpool"
    model, net, _ = load_model(ctx.model_checkpoint)
    assert isinstance(model, RNNPoolNet) and net.kind == "rnnpool" and net.to_arch() == arch
    source = Supernet.load(ckpt, build_plugin(cfg, "data")).extract(arch)
    torch.testing.assert_close(model.classifier.weight, source.classifier.weight, atol=1e-6, rtol=0)


def test_finetune_needs_an_arch_and_a_valid_recipe(tmp_path: Path) -> None:
    with pytest.raises(MissingStageError, match="search"):
        finetune(_cfg(), RunContext(output_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="finetune"):
        finetune(
            _cfg("+finetune.learning_rate=0.1"), RunContext(output_dir=str(tmp_path), arch=SPACE.min_arch().to_dict())
        )


@pytest.mark.slow
def test_train_then_finetune_in_the_pipeline(run_cli, store_uri: str, tmp_path: Path) -> None:
    """`python -m tinyflow`: standalone train -> finetune; finetune's child run holds per-epoch val_acc."""
    from mlflow.tracking import MlflowClient

    res = run_cli(
        "experiment=baseline", "debug=fast", "stages=[train,finetune]", "finetune.epochs=2", "data.batch_size=64"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    client = MlflowClient(tracking_uri=store_uri)
    exp = client.get_experiment_by_name("tinyflow")
    runs = client.search_runs([exp.experiment_id])
    child = next(r for r in runs if r.data.tags.get("stage") == "finetune")
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")] == [0, 1]
    assert 0.0 <= child.data.metrics["accuracy_float"] <= 1.0
    context = (tmp_path / "run" / "context.json").read_text()
    assert '"accuracy_float"' in context and str(tmp_path / "run" / "model.pt") in context
