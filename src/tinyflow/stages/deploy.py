"""Stage `deploy`: the configured backend deploys the Deployment `schedule` planned (docs/design.md §4, §15).

It loads that Deployment (`ctx.artifacts["deployment"]`, never a sidecar), hands it with the final model, the test
data and the files `quantize` exported to `Backend.deploy`, and keeps the `BackendResult`: its metrics in
`ctx.metrics`, its checks in `ctx.extra["deploy_checks"]`, its files in `ctx.artifacts`, its report sections (as
dicts) in `ctx.extra["report_sections"]` and each of its details in `ctx.extra` under its own name (backend `c`:
`firmware`), listed in `ctx.extra["backend_details"]` (its metric names in `ctx.extra["backend_metrics"]`);
`report.json` carries both.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from tinyflow.context import RunContext
from tinyflow.contracts import BackendResult
from tinyflow.deploy.model import load_deployment, load_final_model, require
from tinyflow.errors import TinyflowError
from tinyflow.metrics_vocabulary import ACCURACY_NAMES, MEMORY_NAMES, covers, figures, record, tag_stage_run
from tinyflow.plugins import build_plugin
from tinyflow.stages import stage
from tinyflow.tracking import active_tracker

#: where the stage keeps a backend's report sections (`ReportSection.to_dict()`), read by `tinyflow.report`
SECTIONS_KEY = "report_sections"
_RESERVED = frozenset({"backend", "deploy_checks", SECTIONS_KEY, "backend_details", "backend_metrics"})


def store_result(ctx: RunContext, backend_name: str, result: BackendResult) -> None:
    """Keep what the backend returned in the run context (JSON-ready, so a resumed run's report shows it)."""
    if not isinstance(result, BackendResult):
        raise TinyflowError(
            f"backend {backend_name}: deploy returned a {type(result).__name__}; it must return a "
            "tinyflow.contracts.BackendResult (metrics, checks, files, sections, details)."
        )
    ctx.metrics.update({k: float(v) for k, v in result.metrics.items()})
    ctx.extra["backend_metrics"] = sorted(result.metrics)
    ctx.extra["backend"] = backend_name
    ctx.extra["deploy_checks"] = dict(result.checks)
    ctx.extra[SECTIONS_KEY] = [s.to_dict() for s in result.sections]
    for name, value in result.details.items():
        if name in _RESERVED:
            raise TinyflowError(f"backend {backend_name}: a detail may not be named '{name}' (the deploy stage's own)")
        ctx.extra[name] = value
    ctx.extra["backend_details"] = sorted(result.details)
    ctx.artifacts.update({k: str(v) for k, v in result.files.items()})


@stage("deploy")
def run(cfg: DictConfig, ctx: RunContext) -> RunContext:
    _, model = load_final_model(ctx, "deploy")
    files = {
        "onnx": require(ctx, "onnx_path", "quantize", "deploy"),
        "onnx_int8": require(ctx, "onnx_int8_path", "quantize", "deploy"),
    }
    deployment = load_deployment(ctx, "deploy")
    backend = build_plugin(cfg, "backend")
    data = build_plugin(cfg, "data")
    data.set_resolution(int(deployment.input_shape[-1]))
    data.setup("test")
    result = backend.deploy(deployment, model, data, ctx.output_dir, active_tracker(), files)
    store_result(ctx, backend.name, result)
    log_memory_accuracy(ctx, active_tracker(), deployment, backend.name, result)
    return ctx


def log_memory_accuracy(ctx: RunContext, tracker: Any, deployment: Any, backend_name: str, result: Any) -> None:
    """The shared names of the deployed network: what the backend measured under them (its metrics), the rest
    from the Deployment's plan (memory) and the `quantize` stage (accuracy); tags `memory.source` and
    `accuracy.source` say which is which."""
    measured = {k: float(v) for k, v in result.metrics.items() if k in (*MEMORY_NAMES, *ACCURACY_NAMES)}
    planned = figures(
        sram_peak=deployment.peak_live_bytes, sram_arena=deployment.arena_bytes, flash=deployment.flash_bytes
    )
    earlier = figures(accuracy_float=ctx.metrics.get("accuracy_float"), accuracy_int8=ctx.metrics.get("accuracy_int8"))
    values = {**planned, **earlier, **measured}

    def source(names: tuple[str, ...], fallback: str) -> str:
        mine = [n for n in names if n in measured]
        rest = [n for n in names if n in values and n not in measured]
        parts = [f"measured by backend {backend_name}: {', '.join(mine)}"] if mine else []
        parts += [f"{fallback}: {', '.join(rest)}"] if rest else []
        return "; ".join(parts) or "none"

    tag_stage_run(
        tracker,
        {
            "memory.source": source(MEMORY_NAMES, "planned (schedule)"),
            "accuracy.source": source(ACCURACY_NAMES, "quantize stage (onnxruntime)"),
        },
    )
    no_accuracy = (
        None if covers(values, ACCURACY_NAMES) else "deploy: neither the backend nor an earlier stage measured it"
    )
    record(ctx, tracker, "deploy", values, no_accuracy=no_accuracy)
