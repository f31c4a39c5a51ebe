"""The body of `python -m tinyflow.analyze`: build the network, plan it (`plan_deployment`, strict), print, write
analysis.json, track."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from tinyflow.analyze.core import network_graphs
from tinyflow.analyze.networks import build_network
from tinyflow.analyze.render import print_tables, profile_figure
from tinyflow.configured_plan import plan_configured
from tinyflow.context import atomic_write_text
from tinyflow.deployment import Deployment
from tinyflow.errors import ConfigError
from tinyflow.plugins import build_plugin
from tinyflow.tracking import activate

ANALYSIS_FILE = "analysis.json"


def headline_metrics(analysis: dict[str, Any]) -> dict[str, float]:
    """The analysis's numbers as tracker metrics: every number at its top level (figures, budgets, the layer
    comparison and the scheduler's own figures)."""
    return {k: float(v) for k, v in analysis.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def log_analysis(
    tracker: Any, analysis: dict[str, Any], plan: Any, layer: Any, sram: int, fig_path: Path | None
) -> None:
    """Metrics, the JSON and the memory-profile plot into the current run."""
    tracker.log_metrics(headline_metrics(analysis))
    tracker.log_text(json.dumps(analysis, indent=2), ANALYSIS_FILE)
    if fig_path is not None:
        import matplotlib.pyplot as plt

        fig = profile_figure(plan, layer, sram, f"{analysis['network']}: working set per layer")
        tracker.log_figure(fig, "memory_profile.png")
        fig.savefig(fig_path, dpi=110)
        plt.close(fig)


def graph_source(graph: Any) -> str:
    """Where an analysed network's IR came from: the model file it was imported from, or its description."""
    path = graph.meta.get("onnx_path") or graph.meta.get("tflite_path")
    return f"model file {Path(str(path)).name}" if path else "network description"


def plan_network(cfg: DictConfig) -> Deployment:
    """The configured network planned for the configured device (`plan_configured`, strict: an option invalid
    for this network is an error) — what `python -m tinyflow.analyze` reports."""
    scheduler = build_plugin(cfg, "scheduler")
    graph, given = network_graphs(build_network(cfg.network), scheduler)
    model_file = graph.meta.get("onnx_path") or graph.meta.get("tflite_path")  # an imported file: its own flash
    return plan_configured(
        cfg,
        graph,
        scheduler,
        baseline=given,
        model_path=model_file,
        compare_layer=bool(cfg.get("compare_layer", True)),
        source=graph_source(graph),
    )


def run_analyze(cfg: DictConfig) -> dict[str, Any]:
    output = str(cfg.get("output", "table"))
    if output not in ("table", "json"):
        raise ConfigError(f"output: '{output}' is not one of table, json")
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    choices = {k: str(v) for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")}
    tracker = build_plugin(cfg, "tracking")
    tags = {
        "run_name": f"analyze-{choices.get('network', '?')}-{choices.get('scheduler', '?')}",
        "app": "analyze",
        "network": choices.get("network", "?"),
        "scheduler": choices.get("scheduler", "?"),
        "device": choices.get("device", "?"),
        "output_dir": str(out_dir),
    }
    with activate(tracker), tracker.job(cfg, tags), tracker.stage("analyze"):
        # built inside the run: a network or plugin that cannot be built still leaves a FAILED run that says why
        deployment = plan_network(cfg)
        tracker.set_tags(
            {"mlflow.runName": f"analyze-{deployment.analysis['network']}-{deployment.analysis['scheduler']}"}
        )
        analysis, plan, layer = deployment.analysis, deployment.plan, deployment.layer_plan
        atomic_write_text(out_dir / ANALYSIS_FILE, json.dumps(analysis, indent=2))
        fig_path = out_dir / "memory_profile.png" if cfg.get("plot", True) else None
        log_analysis(tracker, analysis, plan, layer, analysis["sram_budget_bytes"], fig_path)
        tracker.log_parent_metrics(headline_metrics(analysis))
    if output == "json":
        print(json.dumps(analysis))
    else:
        print_tables(analysis)
    return {"status": "FINISHED", "output_dir": str(out_dir), "peak_live_bytes": analysis["peak_live_bytes"]}
