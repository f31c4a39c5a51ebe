"""What is deployed is what is measured: the memory engine imports the exported int8 ONNX and plans it."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from omegaconf import DictConfig

from tinyflow.cost.flash import model_flash_bytes
from tinyflow.cost.latency import energy_mj, latency_ms
from tinyflow.errors import ConfigError
from tinyflow.plugins import build_device, build_memory, build_plugin

log = logging.getLogger(__name__)


def analyse_onnx(
    cfg: DictConfig, path: str | os.PathLike[str], schedule_options: dict[str, Any] | None = None
) -> tuple[dict[str, float], Any]:
    """Import `path` with `tinyflow.ir.from_onnx`, plan it with the configured scheduler (with the options the
    search chose, e.g. the patch grid) and cost it with the configured cost model.

    Returns (figures, plan); figures are empty (and a warning logged) when the memory engine's ONNX importer is
    not installed."""
    try:
        from tinyflow.ir import from_onnx

        graph = from_onnx(str(path))
    except ModuleNotFoundError as exc:
        log.warning("memory engine ONNX importer unavailable (%s): int8 model not analysed", exc)
        return {}, None
    figures: dict[str, float] = {}
    plan = None
    if cfg.get("scheduler") is not None:
        plan = build_plugin(cfg, "scheduler", **(schedule_options or {})).plan(graph, build_memory(cfg))
        figures.update(
            peak_sram_bytes=float(plan.peak_live_bytes),
            arena_bytes=float(plan.arena_bytes),
            macs=float(plan.macs),
        )
    # the model's own flash (the device's runtime reserve is already taken off its flash budget)
    figures["flash_bytes"] = float(model_flash_bytes(graph))
    return _timed(cfg, graph, figures), plan


def analyse_rnnpool(cfg: DictConfig, rarch: Any) -> tuple[dict[str, float], Any]:
    """Plan an RNNPool network (`RNNPoolArch`) with the rnnpool scheduler's planner on its IR (`rnnpool_graph`)
    and cost it like `analyse_onnx`.

    The ONNX importer does not know the ops RNNPool exports to (Gather / MatMul / the unrolled recurrences), so
    for this network the deployed-is-measured rule cannot hold: these figures are the IR's, built from the same
    `RNNPoolArch` the int8 file was exported from. `flash_bytes` here is the IR's count (float weights counted at
    `memory.dtype_bytes`); the caller counts the int8 file's own initializers separately."""
    from tinyflow.ir.rnnpool import rnnpool_graph
    from tinyflow.memory.rnnpool_plan import rnnpool_plan

    graph = rnnpool_graph(rarch)
    plan = rnnpool_plan(graph, build_memory(cfg))
    figures = {
        "peak_sram_bytes": float(plan.peak_live_bytes),
        "arena_bytes": float(plan.arena_bytes),
        "macs": float(plan.macs),
        "flash_bytes": float(model_flash_bytes(graph)),
    }
    return _timed(cfg, graph, figures), plan


def _timed(cfg: DictConfig, graph: Any, figures: dict[str, float]) -> dict[str, float]:
    """`figures` plus params, MACs (when no plan gave them), latency and energy of `graph`."""
    figures["params"] = float(graph.params())
    figures.setdefault("macs", float(graph.macs()))
    if cfg.get("cost_model") is not None:
        cost = build_plugin(cfg, "cost_model").estimate(graph, build_device(cfg))
        if cost.latency_ms is not None:
            figures["latency_ms"] = float(cost.latency_ms)
        if cost.energy_mj is not None:
            figures["energy_mj"] = float(cost.energy_mj)
    # a cost model without latency (analytic): MicroNets' linear model with the device's coefficients, if any
    device = build_device(cfg)
    for key, fn in (("latency_ms", latency_ms), ("energy_mj", energy_mj)):
        if key not in figures:
            with contextlib.suppress(ConfigError):
                figures[key] = float(fn(int(figures["macs"]), device))
    return figures
