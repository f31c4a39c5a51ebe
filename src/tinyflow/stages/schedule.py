"""Stage `schedule`: plan the pipeline's model with the configured scheduler (DESIGN §1, §4).

The model is the exported int8 ONNX (`ctx.onnx_int8_path`) when there is one, else the float ONNX
(`ctx.onnx_path`), else the searched arch (`ctx.arch`) lowered with `from_arch`. Scheduler options found by a
joint search (`ctx.schedule_options`, e.g. the patch scheduler's n_patches / patch_blocks) are applied to the
configured scheduler when it has them. The analysis (the same as `python -m tinyflow.analyze`) goes to
`ctx.plan`, the full placed plan to `plan.json`, the figures and the memory-profile plot to MLflow.
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


@stage("schedule")
def run(cfg: DictConfig, ctx: RunContext) -> RunContext:
    graph, source = pipeline_graph(ctx)
    scheduler = build_plugin(cfg, "scheduler")
    applied = apply_options(scheduler, ctx.schedule_options)
    memory, device = build_memory(cfg), build_device(cfg)
    analysis, plan, layer = analyze(graph, scheduler, memory, device)
    analysis["source"] = source
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
