"""The analysis of one network: a plan from the configured scheduler, flash, the per-layer profile, fits?

Shared by `python -m tinyflow.analyze` and the pipeline's `schedule` stage.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from tinyflow.contracts import Device, MemoryConfig
from tinyflow.cost.flash import model_flash_bytes
from tinyflow.cost.latency import energy_mj, latency_ms
from tinyflow.ir.graph import Graph
from tinyflow.memory.layer_plan import layer_plan
from tinyflow.memory.plan import ExecutionPlan

PATCH_KEYS = ("n_patches", "patch_blocks", "input_patch_hw", "patch_stage_macs", "patch_stage_macs_layerwise")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def analyze(
    graph: Graph, scheduler: Any, memory: MemoryConfig, device: Device, compare_layer: bool = True
) -> tuple[dict[str, Any], ExecutionPlan, ExecutionPlan | None]:
    """(analysis dict, the scheduler's plan, the layer plan for comparison or None when it is the same)."""
    plan: ExecutionPlan = scheduler.plan(graph, memory)
    name = getattr(scheduler, "name", plan.scheduler)
    layer = layer_plan(graph, memory) if (compare_layer and name != "layer") else None
    rewrite = getattr(scheduler, "network_graph", None)  # a scheduler that changes the network (rnnpool)
    flash = model_flash_bytes(rewrite(graph) if callable(rewrite) else graph) + int(device.flash_reserve_kb * 1024)
    out: dict[str, Any] = {
        "network": graph.name,
        "scheduler": name,
        "device": device.name,
        "memory": asdict(memory),
        "peak_live_bytes": plan.peak_live_bytes,
        "arena_bytes": plan.arena_bytes,
        "arena_algorithm": plan.arena_algorithm,
        "flash_bytes": flash,
        "model_flash_bytes": flash - int(device.flash_reserve_kb * 1024),
        "macs": plan.macs,
        "params": plan.params,
        "peak_layer": plan.peak_layer,
        "sram_budget_bytes": device.sram_budget_bytes,
        "flash_budget_bytes": device.flash_bytes,
        "fits_sram": plan.arena_bytes <= device.sram_budget_bytes,
        "fits_flash": flash <= device.flash_bytes,
    }
    out["fits"] = out["fits_sram"] and out["fits_flash"]
    try:
        out["latency_ms"] = latency_ms(plan.macs, device)
        out["energy_mj"] = energy_mj(plan.macs, device) if (device.energy_mj_per_mop or device.power_mw) else None
        out["latency_source"] = device.coefficient_source or "derived from clock"
    except Exception:  # a device without coefficients: no latency, nothing else changes
        out["latency_ms"] = out["energy_mj"] = None
    for key in PATCH_KEYS:
        if key in plan.extra:
            out[key] = _jsonable(plan.extra[key])
    for key, value in plan.extra.items():
        if key not in PATCH_KEYS:
            out.setdefault(key, _jsonable(value))
    if layer is not None:
        out["layer_peak_live_bytes"] = layer.peak_live_bytes
        out["layer_arena_bytes"] = layer.arena_bytes
        out["layer_macs"] = layer.macs
        out["peak_reduction"] = layer.peak_live_bytes / plan.peak_live_bytes if plan.peak_live_bytes else None
        out.setdefault("extra_macs_ratio", plan.macs / layer.macs - 1.0 if layer.macs else None)
    out["per_layer"] = _jsonable(plan.per_layer)
    return out, plan, layer
