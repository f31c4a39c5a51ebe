"""`plan_deployment` with the plugins a config names: what `python -m tinyflow.analyze` and `python -m
tinyflow.firmware` plan for one model file or description (strict: an option invalid for this network is an error)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from tinyflow.deployment import Deployment, plan_deployment
from tinyflow.ir.graph import Graph
from tinyflow.plugins import build_device, build_memory, build_plugin


def plan_configured(cfg: DictConfig, graph: Graph, scheduler: Any = None, **options: Any) -> Deployment:
    """Plan `graph` with the config's scheduler (or `scheduler`, already built), memory conventions, device and
    cost model; `options` go to `plan_deployment` (network, baseline, model_path, source, compare_layer)."""
    cost_model = build_plugin(cfg, "cost_model") if cfg.get("cost_model") is not None else None
    return plan_deployment(
        graph,
        scheduler if scheduler is not None else build_plugin(cfg, "scheduler"),
        build_memory(cfg),
        build_device(cfg),
        cost_model,
        strict=True,
        **options,
    )
