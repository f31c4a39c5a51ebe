"""Stage `schedule`: the one place the pipeline's deployed network is planned and costed (docs/design.md §1, §5).

The network is the run context's (`ctx.network`, a `DeployedNetwork`: what finetune trained, or the plain network
of the searched arch); the configured scheduler, built with the options a joint search chose
(`ctx.schedule_options`), says which network it deploys for it (`Scheduler.network`). Its IR is the int8 file
`quantize` exported when the importer reads it (what is deployed is what is measured), else the network's
description carrying the int8 file's constants and quantization (`tinyflow.ir.onnx_constants`). It is planned by
`tinyflow.deployment.plan_deployment` (the function `python -m tinyflow.analyze` and `python -m tinyflow.firmware`
plan with; flash is decided there once) and saved as one `deployment.npz` in the run dir:
`ctx.artifacts["deployment"]`, which `deploy` (and a resumed run) loads. `ctx.plan` is that Deployment's analysis
(a JSON mirror the report and the search summary read); `plan.json` and `analysis.json` are written for people
and the tracker — no code reads them back.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from tinyflow.analyze.app import headline_metrics
from tinyflow.analyze.render import profile_figure
from tinyflow.context import RunContext, atomic_write_text
from tinyflow.deploy.model import context_network
from tinyflow.deployment import DEPLOYMENT_FILE, Deployment, plan_deployment
from tinyflow.ir.graph import Graph
from tinyflow.metrics_vocabulary import ACCURACY_NAMES, covers, figures, record
from tinyflow.network import DeployedNetwork
from tinyflow.plugins import build_device, build_memory, build_plugin
from tinyflow.stages import stage
from tinyflow.tracking import active_tracker

log = logging.getLogger(__name__)

INT8_SOURCE = "int8 ONNX"
NO_ACCURACY = "schedule: no stage before it measured an accuracy of the planned network (no quantize stage ran)"
#: the source of an IR imported from the int8 file, by its suffix
INT8_SOURCES = {".onnx": INT8_SOURCE, ".tflite": "int8 TFLite"}


def deployed_graph(net: DeployedNetwork, onnx_int8_path: str | None) -> tuple[Graph, str]:
    """The IR of the deployed network and where it came from: the int8 model file (ONNX or TFLite, by its
    suffix) when there is one and the importer reads it, else the network's description (`net.graph()`)."""
    if onnx_int8_path and Path(onnx_int8_path).is_file():
        from tinyflow.ir import import_model
        from tinyflow.ir.model_errors import UnsupportedOpError

        try:
            return import_model(onnx_int8_path), INT8_SOURCES.get(Path(onnx_int8_path).suffix, INT8_SOURCE)
        except UnsupportedOpError as exc:
            source = f"network description (the importer does not read op {exc.op} of the int8 file)"
            log.info("schedule: %s; planning the %s network's IR instead", source, net.kind)
            return net.graph(), source
    return net.graph(), "network description"


def with_file_constants(graph: Graph, source: str, model_path: str | None) -> Graph:
    """A description's IR carrying the int8 ONNX file's weights and quantization (`attach_onnx_constants`), so
    no backend opens the file for them; an imported IR has its own. A file that is not the int8 export of the
    network is an error naming it."""
    if source in INT8_SOURCES.values() or not model_path or Path(model_path).suffix != ".onnx":
        return graph
    from tinyflow.ir.onnx_constants import attach_onnx_constants

    attach_onnx_constants(graph, model_path)
    return graph


def _log(deployment: Deployment, title: str, sram_budget: int) -> None:
    """Params, metrics, the analysis, the plan file and the memory-profile figure into the stage's run."""
    import matplotlib.pyplot as plt

    analysis = deployment.analysis
    tracker = active_tracker()
    tracker.log_params(
        {
            "schedule.source": deployment.source,
            "schedule.scheduler": analysis["scheduler"],
            **analysis["applied_schedule_options"],
        }
    )
    tracker.log_metrics(headline_metrics(analysis))
    tracker.log_text(json.dumps(analysis, indent=2), "analysis.json")
    fig = profile_figure(deployment.plan, deployment.layer_plan, sram_budget, title)
    tracker.log_figure(fig, "memory_profile.png")
    plt.close(fig)


@stage("schedule")
def run(cfg: DictConfig, ctx: RunContext) -> RunContext:
    net = context_network(ctx, "schedule")
    scheduler = build_plugin(cfg, "scheduler", **(ctx.schedule_options or {}))
    deployed = scheduler.network(net)
    graph, source = deployed_graph(deployed, ctx.onnx_int8_path)
    baseline = graph if deployed == net else net.graph()  # a scheduler that changed the network: compare with it
    memory, device = build_memory(cfg), build_device(cfg)
    model_path = ctx.onnx_int8_path if ctx.onnx_int8_path and Path(ctx.onnx_int8_path).is_file() else None
    graph = with_file_constants(graph, source, model_path)
    deployment = plan_deployment(
        graph,
        scheduler,
        memory,
        device,
        build_plugin(cfg, "cost_model"),
        network=deployed,
        baseline=baseline,
        model_path=model_path,
        source=source,
    )
    analysis = deployment.analysis
    analysis["applied_schedule_options"] = dict(ctx.schedule_options or {})

    out_dir = Path(ctx.output_dir)
    deployment_path = deployment.save(out_dir / DEPLOYMENT_FILE)
    plan_path = out_dir / "plan.json"  # for people and the tracker; code reads the Deployment
    atomic_write_text(plan_path, json.dumps(deployment.plan.to_dict(), default=str))
    atomic_write_text(out_dir / "analysis.json", json.dumps(analysis, indent=2))
    _log(deployment, f"{deployed.name} ({source}): working set per layer", device.sram_budget_bytes)
    active_tracker().log_artifact(str(plan_path))
    log.info(
        "schedule: %s plan of %s (%s): peak %d B, arena %d B, flash %d B, %d MACs",
        analysis["scheduler"],
        deployed.name,
        source,
        deployment.peak_live_bytes,
        deployment.arena_bytes,
        deployment.flash_bytes,
        deployment.macs,
    )
    values = figures(
        sram_peak=deployment.peak_live_bytes,
        sram_arena=deployment.arena_bytes,
        flash=deployment.flash_bytes,
        accuracy_float=ctx.metrics.get("accuracy_float"),
        accuracy_int8=ctx.metrics.get("accuracy_int8"),
    )
    no_accuracy = None if covers(values, ACCURACY_NAMES) else NO_ACCURACY
    record(ctx, active_tracker(), "schedule", values, no_accuracy=no_accuracy)
    ctx.plan = analysis
    ctx.artifacts["deployment"] = str(deployment_path)
    ctx.artifacts["plan"] = str(plan_path)
    return ctx
