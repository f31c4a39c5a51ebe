"""Analytic costs of a graph: MACs, params, flash and activation sizes, per layer and in total."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tinyflow.contracts import CostReport, Device, MemoryConfig
from tinyflow.cost.flash import model_flash_bytes, node_flash_bytes
from tinyflow.ir.graph import Graph
from tinyflow.ir.ops import describe_attrs

if TYPE_CHECKING:
    from tinyflow.memory.plan import ExecutionPlan


def per_layer_costs(graph: Graph, memory: MemoryConfig | None = None) -> list[dict[str, Any]]:
    """One row per op: name, op, block, output shape, activation bytes, MACs, params, flash bytes."""
    memory = memory or MemoryConfig()
    rows = []
    for node in graph.topological_order():
        if node.op == "input":
            continue
        w, bias = graph.node_params(node)
        rows.append(
            {
                "name": node.name,
                "op": node.op,
                "attrs": describe_attrs(node.attrs),
                "block": node.block,
                "output_shape": list(node.shape),
                "activation_bytes": math.prod(node.shape) * (node.elem_bytes or memory.dtype_bytes),
                "macs": graph.node_macs(node),
                "params": w + bias,
                "flash_bytes": node_flash_bytes(graph, node),
            }
        )
    return rows


def analytic_report(
    graph: Graph, device: Device, memory: MemoryConfig | None = None, plan: ExecutionPlan | None = None
) -> CostReport:
    """MACs, params and flash (the model alone; the device's runtime reserve is off its flash budget), with the
    per-layer table. With a `plan`, MACs are the plan's (a patch schedule recomputes overlapping halos)."""
    rows = per_layer_costs(graph, memory)
    return CostReport(
        macs=int(plan.macs) if plan is not None else sum(r["macs"] for r in rows),
        params=sum(r["params"] for r in rows),
        flash_bytes=model_flash_bytes(graph),
        per_layer=rows,
    )
