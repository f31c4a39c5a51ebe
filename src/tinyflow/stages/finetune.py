"""Stage `finetune`: the searched arch's network, a few epochs of the standalone recipe.

The network is the supernet's for the arch (`Supernet.network`: plain, or the RNNPool network of a supernet trained
with an RNNPool stem), or the plain one without a supernet, mapped by the configured scheduler to the network it
deploys (`Scheduler.network`: `scheduler=rnnpool` rewrites a plain network, and leaves an RNNPool one as it is). Its
model (`DeployedNetwork.build_model`) starts from the supernet's extracted weights (BatchNorm recalibrated): all of
them when the scheduler kept the network, else those that carry over (`init_from_static`: stem, kept blocks, head,
classifier; the new parts seeded fresh). Without a supernet (or with `finetune.from_supernet=false`) it starts from
scratch. Writes `model.pt` (state_dict + the network's description) atomically into the job's output dir, records
the network in `ctx.network` and the test accuracy as `accuracy_float`, with its 95 % Wilson interval
(`accuracy_float_ci95_low/high`) over the `test_images` it was measured on (tinyflow.confidence).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from tinyflow.arch.genome import Arch
from tinyflow.confidence import ci_metrics, dataset_size
from tinyflow.context import RunContext
from tinyflow.deploy.model import require
from tinyflow.metrics_vocabulary import figures, intervals, record
from tinyflow.network import DeployedNetwork
from tinyflow.network_memory import network_memory
from tinyflow.plugins import build_plugin
from tinyflow.stages import stage
from tinyflow.supernet import Supernet
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


def load_supernet(cfg: DictConfig, ctx: RunContext, data: Any) -> Supernet | None:
    """The train stage's supernet, or None when there is none (or `finetune.from_supernet=false`)."""
    if not ctx.supernet_checkpoint or not cfg.get("finetune", {}).get("from_supernet", True):
        return None
    return Supernet.load(ctx.supernet_checkpoint, data)


def deployed_network(cfg: DictConfig, net: DeployedNetwork) -> DeployedNetwork:
    """The network the configured scheduler deploys for `net` (`net` itself without a scheduler)."""
    if cfg.get("scheduler") is None:
        return net
    return build_plugin(cfg, "scheduler").network(net)


def rewritten_init(net: DeployedNetwork, extracted: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The supernet's weights carried over into the network the scheduler rewrote (its model's `init_from_static`:
    stem, kept blocks, head, classifier; the new parts, e.g. RNNPool, seeded fresh), as that model's state_dict."""
    from tinyflow.training.lightning import seed_all

    seed_all(seed)
    model = net.build_model()
    init_from = getattr(model, "init_from_static", None)
    if init_from is None:
        raise TypeError(f"finetune: the {net.kind} model {type(model).__name__} has no init_from_static")
    copied = init_from(extracted)
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
    supernet = load_supernet(cfg, ctx, data)
    source = supernet.network(arch) if supernet is not None else DeployedNetwork.plain(arch)
    net = deployed_network(cfg, source)
    init: dict[str, torch.Tensor] | None = None
    metrics: dict[str, float] = {}
    if supernet is not None:
        extracted = supernet.extract(arch)
        data.set_resolution(arch.resolution)
        metrics["finetune_test_accuracy_before"] = evaluate_accuracy(extracted, data.test_dataloader())
        init = extracted.state_dict() if net == source else rewritten_init(net, extracted, recipe.seed)
    out = Path(ctx.output_dir)
    model, result = fit_static(
        net,
        data,
        recipe,
        out / "finetune",
        tracker,
        init_state=init,
        init_source=f"supernet:{ctx.supernet_checkpoint}" if init is not None else "scratch",
        model_path=out / MODEL_FILE,
    )
    metrics.update(
        {
            "accuracy_float": evaluate_accuracy(model, data.test_dataloader()),
            "finetune_val_accuracy": float(result["val_accuracy"]),
            "finetune_wall_time_s": float(result["wall_time_s"]),
        }
    )
    n_test = dataset_size(data.test_dataloader())
    metrics |= ci_metrics("accuracy_float", metrics["accuracy_float"], n_test)
    if n_test is not None:
        metrics["test_images"] = float(n_test)
    ctx.model_checkpoint = result["checkpoint"]
    ctx.network = net.to_dict()
    ctx.metrics.update(metrics)
    tracker.log_metrics(metrics)
    tracker.log_parent_metrics(metrics)
    log.info("finetune: %s", ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    values = {**network_memory(cfg, net, ctx.schedule_options), **figures(accuracy_float=metrics["accuracy_float"])}
    values |= intervals(n=n_test, accuracy_float=metrics["accuracy_float"])
    record(ctx, tracker, "finetune", values)
    return ctx
