"""What the parent run of a job shows besides the report's numbers (docs/design.md §12): the figure "memory and
accuracy along the pipeline" and the deployed int8 model as an MLflow 3 LoggedModel linked to the run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tinyflow.metrics_vocabulary import CONTEXT_KEY, figures

log = logging.getLogger(__name__)


def log_pipeline_figure(ctx: Any, tracker: Any, sram_budget: int | None, flash_budget: int | None) -> Path | None:
    """Draw the stages' headline figures with the budgets as lines, save it in the run folder and log it on the
    parent run; None when no stage recorded any."""
    from tinyflow.pipeline_figure import FIGURE_FILE, pipeline_figure

    stage_figures = {s: ctx.extra[CONTEXT_KEY][s] for s in ctx.completed if s in ctx.extra.get(CONTEXT_KEY, {})}
    if not stage_figures:
        return None
    import matplotlib.pyplot as plt

    fig = pipeline_figure(stage_figures, sram_budget, flash_budget)
    path = Path(ctx.output_dir) / FIGURE_FILE
    fig.savefig(path, dpi=110)
    try:
        tracker.log_figure(fig, FIGURE_FILE)
    finally:
        plt.close(fig)
    return path


def deployed_model_figures(ctx: Any, f: Any) -> tuple[dict[str, float], dict[str, str]]:
    """The deployed model's metrics (the deploy stage's shared names, else the report's plan and accuracy; MACs,
    latency) and params (device, arch, scheduler, budgets)."""
    deployed = ctx.extra.get(CONTEXT_KEY, {}).get("deploy", {}).get("metrics", {})
    planned = figures(
        sram_peak=f.peak_sram_bytes,
        sram_arena=f.arena_bytes,
        flash=f.flash_bytes,
        accuracy_float=f.accuracy_float,
        accuracy_int8=f.accuracy_int8,
    )
    metrics = {**planned, **deployed}
    metrics.update({k: v for k, v in (("macs", f.macs), ("latency_ms", f.latency_ms)) if v is not None})
    params = {
        "device": f.device,
        "arch": f.arch,
        "resolution": f.resolution,
        "scheduler": f.scheduler,
        "sram_budget_bytes": f.sram_budget_bytes,
        "flash_budget_bytes": f.flash_budget_bytes,
        "backend": ctx.extra.get("backend"),
    }
    return metrics, {k: str(v) for k, v in params.items() if v is not None}


def log_deployed_model(ctx: Any, tracker: Any, f: Any) -> str | None:
    """The int8 file the run deployed as the parent run's LoggedModel (a tracker that keeps no models, or a run
    without a `deploy` stage, logs none)."""
    log_model = getattr(tracker, "log_deployed_model", None)
    path = ctx.onnx_int8_path
    if log_model is None or "deploy" not in ctx.completed or not path or not Path(path).is_file():
        return None
    metrics, params = deployed_model_figures(ctx, f)
    return log_model(path, metrics, params)


#: MLflow 3.17's UI opens an experiment on the GenAI overview unless its workflow switch says "Model training"
UI_QUERY = "?workflowType=machine_learning"


def ui_link(tracker: Any) -> str | None:
    """How to see this job in the MLflow UI, on its runs (not the GenAI overview): the command for a local store
    and the parent run's address; None for a tracker that keeps no MLflow runs."""
    uri, parent, client = (getattr(tracker, name, None) for name in ("uri", "parent_id", "client"))
    if not uri or not parent or client is None:
        return None
    experiment = client.get_run(parent).info.experiment_id
    page = f"#/experiments/{experiment}/runs/{parent}{UI_QUERY}"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {uri} , then open http://127.0.0.1:5000/{page}"
