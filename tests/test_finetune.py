"""Stage `finetune` on a composed config (debug=fast): from scratch, and from extracted supernet weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

import tinyflow
from tinyflow.arch import MBConvSpace
from tinyflow.context import RunContext
from tinyflow.deploy.model import MissingStageError, load_final_model
from tinyflow.errors import ConfigError
from tinyflow.nn.static import StaticNet
from tinyflow.stages.finetune import run as finetune
from tinyflow.training.checkpoint import load_static_model, save_static_model

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


class PretrainedTrainer:
    """A trainer plugin whose 'supernet checkpoint' is a model.pt: `extract` returns those weights."""

    name = "pretrained"

    def fit(self, space, data, workdir, tracker):  # pragma: no cover - not used by finetune
        raise NotImplementedError

    def evaluate(self, arch, split="val"):  # pragma: no cover
        raise NotImplementedError

    def load(self, space, data, checkpoint: str) -> None:
        self.checkpoint = checkpoint

    def extract(self, arch):
        model, saved_arch, _ = load_static_model(self.checkpoint)
        assert saved_arch == arch
        return model


def test_finetune_from_scratch_writes_model_and_accuracy(tmp_path: Path) -> None:
    cfg = _cfg("finetune.epochs=2", "finetune.limit_train_batches=null", "finetune.lr=0.2", "data.batch_size=32")
    arch = SPACE.min_arch()
    ctx = finetune(cfg, RunContext(output_dir=str(tmp_path), arch=arch.to_dict()))
    assert ctx.model_checkpoint == str(tmp_path / "model.pt")
    assert ctx.metrics["accuracy_float"] > 0.3  # 512 training images, 2 epochs; chance is 0.1
    loaded_arch, model = load_final_model(ctx, "quantize")  # what the next stages read
    assert loaded_arch == arch and isinstance(model, StaticNet)
    assert "finetune_test_accuracy_before" not in ctx.metrics


def test_finetune_starts_from_the_extracted_supernet_weights(tmp_path: Path) -> None:
    arch = SPACE.min_arch()
    torch.manual_seed(3)
    source = StaticNet(arch)
    save_static_model(tmp_path / "supernet.pt", source, arch)
    cfg = _cfg("finetune.lr=1e-9")
    with open_dict(cfg):
        cfg.trainer = OmegaConf.create({"_target_": f"{__name__}.PretrainedTrainer"})
    ctx = RunContext(
        output_dir=str(tmp_path / "run"), arch=arch.to_dict(), supernet_checkpoint=str(tmp_path / "supernet.pt")
    )
    ctx = finetune(cfg, ctx)
    assert "finetune_test_accuracy_before" in ctx.metrics
    tuned, _, _ = load_static_model(ctx.model_checkpoint)
    for (name, p), q in zip(tuned.named_parameters(), source.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)  # started from them; lr ~0 kept them


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
