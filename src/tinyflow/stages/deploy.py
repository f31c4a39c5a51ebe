"""Stage `deploy`: the configured backend checks, measures and logs the files made by `quantize`."""

from __future__ import annotations

from omegaconf import DictConfig

from tinyflow.context import RunContext
from tinyflow.deploy.model import load_final_model, require
from tinyflow.plugins import build_plugin
from tinyflow.stages import stage
from tinyflow.tracking import active_tracker


@stage("deploy")
def run(cfg: DictConfig, ctx: RunContext) -> RunContext:
    arch, model = load_final_model(ctx, "deploy")
    files = {
        "onnx": require(ctx, "onnx_path", "quantize", "deploy"),
        "onnx_int8": require(ctx, "onnx_int8_path", "quantize", "deploy"),
        **({"plan": ctx.artifacts["plan"]} if ctx.artifacts.get("plan") else {}),  # the schedule stage's plan.json
    }
    backend = build_plugin(cfg, "backend")
    data = build_plugin(cfg, "data")
    data.set_resolution(arch.resolution)
    data.setup("test")
    result = backend.deploy(model, arch, data, ctx.output_dir, active_tracker(), files)
    ctx.metrics.update({k: float(v) for k, v in result.get("metrics", {}).items()})
    ctx.extra["deploy_checks"] = result.get("checks", {})
    ctx.extra["backend"] = backend.name
    ctx.artifacts.update(result.get("files", {}))
    ctx.extra.update(result.get("extra", {}))  # a backend's own report section (backend=c: `firmware`)
    return ctx
