"""What is deployed is what is measured: the memory engine imports the exported int8 ONNX and plans it."""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig

from tinyflow.plugins import build_device, build_memory, build_plugin

log = logging.getLogger(__name__)


def analyse_onnx(cfg: DictConfig, path: str | os.PathLike[str]) -> tuple[dict[str, float], Any]:
    """Import `path` with `tinyflow.ir.from_onnx`, plan it with the configured scheduler and cost it with the
    configured cost model. Returns (figures, plan); figures are empty (and a warning logged) when the memory
    engine's ONNX importer is not installed."""
    try:
        from tinyflow.ir import from_onnx

        graph = from_onnx(str(path))
    except ModuleNotFoundError as exc:
        log.warning("memory engine ONNX importer unavailable (%s): int8 model not analysed", exc)
        return {}, None
    figures: dict[str, float] = {}
    plan = None
    if cfg.get("scheduler") is not None:
        plan = build_plugin(cfg, "scheduler").plan(graph, build_memory(cfg))
        figures.update(
            peak_sram_bytes=float(plan.peak_live_bytes),
            arena_bytes=float(plan.arena_bytes),
            macs=float(plan.macs),
        )
    if cfg.get("cost_model") is not None:
        cost = build_plugin(cfg, "cost_model").estimate(graph, build_device(cfg))
        figures["flash_bytes"] = float(cost.flash_bytes)
        figures.setdefault("macs", float(cost.macs))
        if cost.latency_ms is not None:
            figures["latency_ms"] = float(cost.latency_ms)
        if cost.energy_mj is not None:
            figures["energy_mj"] = float(cost.energy_mj)
    return figures, plan
