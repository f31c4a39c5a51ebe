"""Stage `schedule`: plan the pipeline's model with the configured scheduler (DESIGN §1, §4).

The model is the exported int8 ONNX (`ctx.onnx_int8_path`) when there is one, else the float ONNX
(`ctx.onnx_path`), else the searched arch (`ctx.arch`) lowered with `from_arch`. Scheduler options found by a
joint search (`ctx.schedule_options`, e.g. the patch scheduler's n_patches / patch_blocks) are applied to the
configured scheduler when it has them. An RNNPool model (finetune under `scheduler=rnnpool`; its model.pt records
the options) is planned from the arch by the rnnpool scheduler instead, since the ONNX importer does not know the
ops RNNPool exports to; `ctx.plan["source"]` and `["source_note"]` say so and flash is the int8 file's own count.
The analysis (the same as `python -m tinyflow.analyze`) goes to `ctx.plan`, the full placed plan to `plan.json`,
the figures and the memory-profile plot to MLflow.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tinyflow.analyze.app import headline_metrics
from tinyflow.analyze.core import analyze
from tinyflow.analyze.render import profile_figure
from tinyflow.context import RunContext, atomic_write_text
from tinyflow.errors import ConfigError
from tinyflow.ir.graph import Graph
from tinyflow.plugins import build_device, build_memory, build_plugin
from tinyflow.stages import stage
from tinyflow.tracking import active_tracker

log = logging.getLogger(__name__)


def pipeline_graph(ctx: RunContext) -> tuple[Graph, str]:
    """The IR of the pipeline's model and where it came from."""
    for attr, label in (("onnx_int8_path", "int8 ONNX"), ("onnx_path", "ONNX")):
        path = getattr(ctx, attr)
        if path and Path(path).is_file():
            from tinyflow.ir.onnx_import import from_onnx

            return from_onnx(path), label
    if ctx.arch:
        from tinyflow.arch.genome import Arch
        from tinyflow.ir.from_arch import from_arch

        return from_arch(Arch.from_dict(ctx.arch)), "arch"
    raise ConfigError(
        "stage schedule: there is no model to plan — no exported ONNX and no searched arch in the run context. "
        "Run the `search` stage (or `quantize`) before `schedule`, e.g. stages=[space,train,search,schedule]."
    )


def apply_options(scheduler: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Set searched options the scheduler has (e.g. n_patches, patch_blocks); returns what was applied."""
    applied = {k: v for k, v in (options or {}).items() if hasattr(scheduler, k)}
    for key, value in applied.items():
        setattr(scheduler, key, value)
    return applied


def rnnpool_options(ctx: RunContext) -> dict[str, Any] | None:
    """The RNNPool options the fine-tuned model was built with (its model.pt records them), or None when the
    model is a plain static network (or there is no model yet)."""
    if not ctx.model_checkpoint or not Path(ctx.model_checkpoint).is_file():
        return None
    from tinyflow.deploy.model import load_state_dict

    spec = load_state_dict(ctx.model_checkpoint)[2]
    return None if spec is None else dict(spec["options"])


def rnnpool_setup(cfg: DictConfig, ctx: RunContext, options: dict[str, Any]) -> tuple[Graph, Any, str]:
    """The arch IR and the rnnpool scheduler with the model's own options: the scheduler rewrites the arch
    exactly as the deployed `RNNPoolNet` was built (the layer plan compared against is the un-rewritten arch)."""
    if getattr(build_plugin(cfg, "scheduler"), "name", None) != "rnnpool":
        raise ConfigError(
            f"stage schedule: the fine-tuned model ({ctx.model_checkpoint}) is an RNNPool network, but the "
            "configured scheduler is not rnnpool; rerun with scheduler=rnnpool (or fine-tune again under this one)."
        )
    from tinyflow.arch.genome import Arch
    from tinyflow.ir.from_arch import from_arch

    arch = Arch.from_dict(require_arch(ctx))
    scheduler = build_plugin(cfg, "scheduler", **options)
    return from_arch(arch), scheduler, "arch IR, rnnpool scheduler"


def require_arch(ctx: RunContext) -> dict[str, Any]:
    if not ctx.arch:
        raise ConfigError("stage schedule: the run context has a model but no arch; rerun the `search` stage.")
    return ctx.arch


RNNPOOL_NOTE = (
    "the arch IR rewritten by the rnnpool scheduler with the model's own options; the int8 ONNX is not imported "
    "(the ONNX importer lacks the ops RNNPool exports to), so these memory figures are not measured on the deployed "
    "file"
)


def int8_flash(analysis: dict[str, Any], ctx: RunContext, reserve_bytes: int) -> None:
    """Replace the IR's flash count by the int8 file's own (its initializers) when the file exists."""
    if not (ctx.onnx_int8_path and Path(ctx.onnx_int8_path).is_file()):
        analysis["flash_source"] = "IR (float weights at memory.dtype_bytes)"
        return
    from tinyflow.deploy.quantize import int8_flash_bytes

    model_flash = int(int8_flash_bytes(ctx.onnx_int8_path)["flash_bytes"])
    analysis["ir_model_flash_bytes"] = analysis["model_flash_bytes"]
    analysis["model_flash_bytes"], analysis["flash_bytes"] = model_flash, model_flash + reserve_bytes
    analysis["fits_flash"] = analysis["flash_bytes"] <= analysis["flash_budget_bytes"]
    analysis["fits"] = analysis["fits_sram"] and analysis["fits_flash"]
    analysis["flash_source"] = "int8 ONNX initializers"


@stage("schedule")
def run(cfg: DictConfig, ctx: RunContext) -> RunContext:
    options = rnnpool_options(ctx)
    if options is None:
        graph, source = pipeline_graph(ctx)
        scheduler = build_plugin(cfg, "scheduler")
        applied = apply_options(scheduler, ctx.schedule_options)
    else:
        graph, scheduler, source = rnnpool_setup(cfg, ctx, options)
        applied = options
    memory, device = build_memory(cfg), build_device(cfg)
    analysis, plan, layer = analyze(graph, scheduler, memory, device)
    analysis["source"] = source
    if options is not None:
        analysis["source_note"] = RNNPOOL_NOTE
        int8_flash(analysis, ctx, int(device.flash_reserve_kb * 1024))
        log.warning("schedule: %s", RNNPOOL_NOTE)
    analysis["applied_schedule_options"] = applied
    out_dir = Path(ctx.output_dir)
    plan_path = out_dir / "plan.json"
    atomic_write_text(plan_path, json.dumps(plan.to_dict(), default=str))
    atomic_write_text(out_dir / "analysis.json", json.dumps(analysis, indent=2))
    tracker = active_tracker()
    tracker.log_params({"schedule.source": source, "schedule.scheduler": analysis["scheduler"], **applied})
    tracker.log_metrics(headline_metrics(analysis))
    tracker.log_text(json.dumps(analysis, indent=2), "analysis.json")
    tracker.log_artifact(str(plan_path))
    import matplotlib.pyplot as plt

    fig = profile_figure(plan, layer, device.sram_budget_bytes, f"{graph.name} ({source}): working set per layer")
    tracker.log_figure(fig, "memory_profile.png")
    plt.close(fig)
    log.info(
        "schedule: %s plan of %s (%s): peak %d B, arena %d B, %d MACs",
        analysis["scheduler"],
        graph.name,
        source,
        analysis["peak_live_bytes"],
        analysis["arena_bytes"],
        analysis["macs"],
    )
    ctx.plan = analysis
    ctx.artifacts["plan"] = str(plan_path)
    return ctx
