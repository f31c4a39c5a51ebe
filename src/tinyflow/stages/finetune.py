"""Stage `finetune`: the searched arch as a static network, a few epochs of the standalone recipe.

When the scheduler rewrites the network (it has a `model_builder`, e.g. `scheduler=rnnpool`), the network trained
and saved is that builder's (an `RNNPoolNet`, initialised from the supernet's subnet with `init_from_static`);
`model.pt` records the rewrite so `quantize` / `deploy` rebuild the same network. A supernet trained with an RNNPool
stem (`trainer.stem=rnnpool`) extracts an `RNNPoolNet` already: that network, all of it (RNNPool included), is
fine-tuned, and the scheduler does not rewrite it again.

Starts from the supernet's weights for that arch when the `train` stage produced a supernet (the trainer
plugin's `load(space, data, checkpoint)` + `extract(arch)`, BatchNorm recalibrated), otherwise from scratch.
Writes `model.pt` (state_dict + arch JSON) atomically into the job's output dir and records the test accuracy
as `accuracy_float`.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from tinyflow.arch.genome import Arch
from tinyflow.context import RunContext
from tinyflow.deploy.model import require
from tinyflow.plugins import build_plugin
from tinyflow.stages import stage
from tinyflow.tracking import active_tracker
from tinyflow.training.classifier import MODEL_FILE, Recipe, fit_static
from tinyflow.training.evaluation import evaluate_accuracy

log = logging.getLogger(__name__)

STAGE_OPTIONS = ("from_supernet",)  # finetune.* keys that are not Recipe fields


def recipe_from_cfg(cfg: DictConfig) -> Recipe:
    """`finetune.*` (minus the stage's own keys) as a `Recipe`, seeded by the job's `seed`."""
    node = cfg.get("finetune") or {}
    options: dict[str, Any] = OmegaConf.to_container(node, resolve=True) if node else {}  # type: ignore[assignment]
    options = {k: v for k, v in options.items() if k not in STAGE_OPTIONS}
    options.setdefault("seed", int(cfg.get("seed", 0)))
    return Recipe.from_options(options, where="finetune")


def supernet_model(cfg: DictConfig, ctx: RunContext, arch: Arch, data: Any) -> torch.nn.Module | None:
    """The supernet's network for `arch` (extracted, BN recalibrated: a `StaticNet`, or an `RNNPoolNet` from a
    supernet with an RNNPool stem), or None when there is no supernet.

    Uses the configured trainer plugin when it can `load` a supernet checkpoint and `extract` a subnet (`ofa`).
    """
    if not ctx.supernet_checkpoint or not cfg.get("finetune", {}).get("from_supernet", True):
        return None
    trainer = build_plugin(cfg, "trainer")
    if not (hasattr(trainer, "load") and hasattr(trainer, "extract")):
        log.warning("finetune: trainer %s cannot extract subnets; fine-tuning from scratch", trainer.name)
        return None
    from tinyflow.stages.train import build_space

    space = build_space(cfg, ctx, data)
    trainer.load(space, data, ctx.supernet_checkpoint)
    return trainer.extract(arch)


def network_builder(cfg: DictConfig) -> Any:
    """The scheduler's `model_builder` when it rewrites the network (`scheduler=rnnpool`), else None."""
    if cfg.get("scheduler") is None:
        return None
    return getattr(build_plugin(cfg, "scheduler"), "model_builder", None)


def rewritten_init(
    builder: Any, arch: Arch, init: dict[str, torch.Tensor] | None, seed: int
) -> dict[str, torch.Tensor] | None:
    """The supernet's weights carried over into the rewritten network (`init_from_static`: stem, kept blocks,
    head, classifier; the new parts, e.g. RNNPool, seeded fresh), as that network's state_dict."""
    if init is None:
        return None
    from tinyflow.nn.static import StaticNet
    from tinyflow.training.lightning import seed_all

    static = StaticNet(arch)
    static.load_state_dict(init)
    seed_all(seed)
    model = builder(arch)
    copied = model.init_from_static(static)
    total = len(model.state_dict())
    log.info(
        "finetune: %s from the supernet's subnet: %d of %d tensors copied", type(model).__name__, len(copied), total
    )
    active_tracker().log_params({"init_tensors_copied": len(copied), "init_tensors_total": total})
    return model.state_dict()


@stage("finetune")
def run(cfg: DictConfig, ctx: RunContext) -> RunContext:
    arch = Arch.from_dict(require(ctx, "arch", "search", "finetune"))
    recipe = recipe_from_cfg(cfg)
    data = build_plugin(cfg, "data")
    data.setup("fit")
    tracker = active_tracker()
    extracted = supernet_model(cfg, ctx, arch, data)
    init = extracted.state_dict() if extracted is not None else None
    metrics: dict[str, float] = {}
    if extracted is not None:
        data.set_resolution(arch.resolution)
        metrics["finetune_test_accuracy_before"] = evaluate_accuracy(extracted, data.test_dataloader())
    rarch = getattr(extracted, "rnnpool_arch", None)
    if rarch is not None:  # the supernet's RNNPool stem: the extracted network is the rewritten one; build it again
        from tinyflow.nn.rnnpool_net import RNNPoolNet

        builder = partial(RNNPoolNet.from_arch, options=rarch.options())
    else:
        builder = network_builder(cfg)
        if builder is not None:
            init = rewritten_init(builder, arch, init, recipe.seed)
    out = Path(ctx.output_dir)
    model, result = fit_static(
        arch,
        data,
        recipe,
        out / "finetune",
        tracker,
        init_state=init,
        init_source=f"supernet:{ctx.supernet_checkpoint}" if init is not None else "scratch",
        model_path=out / MODEL_FILE,
        model_builder=builder,
    )
    metrics.update(
        {
            "accuracy_float": evaluate_accuracy(model, data.test_dataloader()),
            "finetune_val_accuracy": float(result["val_accuracy"]),
            "finetune_wall_time_s": float(result["wall_time_s"]),
        }
    )
    ctx.model_checkpoint = result["checkpoint"]
    ctx.metrics.update(metrics)
    tracker.log_metrics(metrics)
    tracker.log_parent_metrics(metrics)
    log.info("finetune: %s", ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return ctx
