"""Stage `train`: train the search space's supernet (`trainer=ofa`) or one fixed arch (`trainer=standalone`).

Builds the data, the search space (re-targeted to the width multiplier and resolution that the `space` stage
chose, and bound to the data's channels and classes) and the trainer, fits, and records the checkpoint and the
accuracies of the largest and smallest subnets in the run context.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tinyflow.context import RunContext
from tinyflow.plugins import build_plugin
from tinyflow.stages import stage
from tinyflow.tracking import active_tracker

log = logging.getLogger(__name__)


def build_space(cfg: DictConfig, ctx: RunContext, data: Any) -> Any:
    """The configured search space at the context's (width, resolution), bound to the data when it can be."""
    space = build_plugin(cfg, "search_space")
    if ctx.width_mult is not None and ctx.resolution is not None:
        space = space.with_width_resolution(ctx.width_mult, ctx.resolution)
    if hasattr(space, "bind"):
        data.setup()
        space = space.bind(data)
    return space


@stage("train")
def run(cfg: DictConfig, ctx: RunContext) -> RunContext:
    data = build_plugin(cfg, "data")
    space = build_space(cfg, ctx, data)
    trainer = build_plugin(cfg, "trainer")
    if cfg.get("resume") not in (None, False, "false") and hasattr(trainer, "resume"):
        trainer.resume = True  # a resumed pipeline also continues an interrupted training from its last checkpoint
    tracker = active_tracker()
    tracker.log_params(
        {
            "train.space": getattr(space, "name", "?"),
            "train.width_mult": space.width_mult,
            "train.resolution": space.resolution,
        }
    )
    result = trainer.fit(space, data, str(Path(ctx.output_dir) / "train"), tracker)
    if getattr(trainer, "name", "") == "ofa":
        ctx.supernet_checkpoint = result["checkpoint"]
        metrics = {f"supernet_{k}": float(v) for k, v in result.items() if k.startswith("val_acc_")}
    else:  # a fixed arch: its model is what finetune / quantize / deploy use
        ctx.model_checkpoint = result["checkpoint"]
        if "arch" in result:
            ctx.arch = result["arch"]
        metrics = {"train_val_accuracy": float(result["val_accuracy"])}
    metrics["train_wall_time_s"] = float(result.get("wall_time_s", 0.0))
    ctx.metrics.update(metrics)
    tracker.log_metrics(metrics)
    tracker.log_parent_metrics(metrics)
    log.info("train: %s", ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return ctx
