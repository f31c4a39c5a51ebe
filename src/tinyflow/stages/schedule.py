"""Stage `schedule`: the one place the pipeline's deployed network is planned and costed (docs/design.md §5).

The network is the run context's (`ctx.network`, a `DeployedNetwork`: what finetune trained, or the plain network
of the searched arch); the configured scheduler, built with the options a joint search chose
(`ctx.schedule_options`), says which network it deploys for it (`Scheduler.network`) and plans its IR:
`deployed_graph` imports the int8 ONNX `quantize` exported when the importer reads it (what is deployed is what is
measured), else builds the IR from the network's description. The cost model prices the plan; flash is the int8
file's own count when there is a file. The analysis (the same function as `python -m tinyflow.analyze`) goes to
`ctx.plan`, which the report reads; the placed plan to `plan.json`, the memory profile to the tracker.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tinyflow.analyze.app import headline_metrics
from tinyflow.analyze.core import analyze, set_fits
from tinyflow.analyze.render import profile_figure
from tinyflow.context import RunContext, atomic_write_text
from tinyflow.deploy.model import context_network
from tinyflow.ir.graph import Graph
from tinyflow.network import DeployedNetwork
from tinyflow.plugins import build_device, build_memory, build_plugin
from tinyflow.stages import stage
from tinyflow.tracking import active_tracker

log = logging.getLogger(__name__)

INT8_SOURCE = "int8 ONNX"


def deployed_graph(net: DeployedNetwork, onnx_int8_path: str | None) -> tuple[Graph, str]:
    """The IR of the deployed network and where it came from: the int8 model file (ONNX or TFLite, by its
    suffix) when there is one and the importer reads it, else the network's description (`net.graph()`)."""
    if onnx_int8_path and Path(onnx_int8_path).is_file():
        from tinyflow.ir import import_model
        from tinyflow.ir.model_errors import UnsupportedOpError

        try:
            return import_model(onnx_int8_path), INT8_SOURCE
        except UnsupportedOpError as exc:
            source = f"network description (the importer does not read op {exc.op} of the int8 file)"
            log.info("schedule: %s; planning the %s network's IR instead", source, net.kind)
            return net.graph(), source
    return net.graph(), "network description"


def file_flash(analysis: dict[str, Any], onnx_int8_path: str | None, memory: Any = None) -> None:
    """Flash is the int8 file's own count (its initializers) when there is a file — its size under
    `memory.flash: file` (TF Lite Micro keeps the whole model file in flash); the IR's count is kept beside."""
    if not (onnx_int8_path and Path(onnx_int8_path).is_file()):
        analysis.setdefault("flash_source", "cost model (IR)")
        return
    if memory is not None and memory.flash == "file":
        analysis.setdefault("ir_flash_bytes", analysis["flash_bytes"])
        analysis["flash_bytes"] = Path(onnx_int8_path).stat().st_size
        analysis["flash_source"] = "int8 model file size (memory.flash=file)"
        set_fits(analysis)
        return
    from tinyflow.deploy.quantize import int8_flash_bytes

    counted = int(int8_flash_bytes(onnx_int8_path)["flash_bytes"])
    if counted != analysis["flash_bytes"]:
        analysis["ir_flash_bytes"] = analysis["flash_bytes"]
    analysis["flash_bytes"], analysis["flash_source"] = counted, "int8 ONNX initializers"
    set_fits(analysis)


@stage("schedule")
def run(cfg: DictConfig, ctx: RunContext) -> RunContext:
    net = context_network(ctx, "schedule")
    scheduler = build_plugin(cfg, "scheduler", **(ctx.schedule_options or {}))
    deployed = scheduler.network(net)
    graph, source = deployed_graph(deployed, ctx.onnx_int8_path)
    baseline = graph if deployed == net else net.graph()  # a scheduler that changed the network: compare with it
    memory, device = build_memory(cfg), build_device(cfg)
    cost_model = build_plugin(cfg, "cost_model")
    analysis, plan, layer = analyze(graph, scheduler, memory, device, cost_model, baseline=baseline)
    analysis["source"] = source
    analysis["deployed_network"] = deployed.to_dict()
    analysis["applied_schedule_options"] = dict(ctx.schedule_options or {})
    file_flash(analysis, ctx.onnx_int8_path, memory)

    out_dir = Path(ctx.output_dir)
    plan_path = out_dir / "plan.json"
    atomic_write_text(plan_path, json.dumps(plan.to_dict(), default=str))
    atomic_write_text(out_dir / "analysis.json", json.dumps(analysis, indent=2))
    tracker = active_tracker()
    tracker.log_params(
        {"schedule.source": source, "schedule.scheduler": analysis["scheduler"], **analysis["applied_schedule_options"]}
    )
    tracker.log_metrics(headline_metrics(analysis))
    tracker.log_text(json.dumps(analysis, indent=2), "analysis.json")
    tracker.log_artifact(str(plan_path))
    import matplotlib.pyplot as plt

    fig = profile_figure(plan, layer, device.sram_budget_bytes, f"{deployed.name} ({source}): working set per layer")
    tracker.log_figure(fig, "memory_profile.png")
    plt.close(fig)
    log.info(
        "schedule: %s plan of %s (%s): peak %d B, arena %d B, flash %d B, %d MACs",
        analysis["scheduler"],
        deployed.name,
        source,
        analysis["peak_live_bytes"],
        analysis["arena_bytes"],
        analysis["flash_bytes"],
        analysis["macs"],
    )
    ctx.plan = analysis
    ctx.artifacts["plan"] = str(plan_path)
    return ctx
