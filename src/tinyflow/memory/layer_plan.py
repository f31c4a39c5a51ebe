"""The layer-by-layer plan (TF Lite Micro / TinyEngine): every op over its whole tensor, one after another."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tinyflow.ir.graph import Graph, Node
from tinyflow.ir.pads import materialize_pads
from tinyflow.memory.builder import build_plan
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.lifetimes import compute_lifetimes
from tinyflow.memory.plan import ExecutionPlan, Step, TensorAlloc


def profile_rows(
    steps: Sequence[Node], working_set: Sequence[int], tensors: Sequence[TensorAlloc], macs: Sequence[int]
) -> list[dict[str, Any]]:
    """Per-layer memory profile: one row per op run over its whole tensor."""
    index = {t.name: t for t in tensors}
    rows = []
    for i, node in enumerate(steps):
        rows.append(
            {
                "name": node.name,
                "op": node.op,
                "block": node.block,
                "output_shape": list(node.shape),
                "input_bytes": sum(index[s].size for s in node.inputs),
                "output_bytes": index[node.name].size,
                "working_set_bytes": working_set[i],
                "macs": macs[i],
            }
        )
    return rows


def layer_plan(
    graph: Graph, memory: MemoryConfig, order: Sequence[Node] | None = None, check: bool = True
) -> ExecutionPlan:
    """Plan `graph` op by op: lifetimes, working sets, an arena placement, checked for overlaps.

    With `memory.fold_pads: false` an imported explicit pad is a step and a tensor of its own (TF Lite Micro)."""
    if not memory.fold_pads and order is None:
        graph = materialize_pads(graph)
    lt = compute_lifetimes(graph, memory, order)
    macs = [graph.node_macs(n) for n in lt.steps]
    steps = [
        Step(i, n.name, n.op, n.block, list(n.inputs), [n.name], macs[i], lt.working_set[i], kind="layer")
        for i, n in enumerate(lt.steps)
    ]
    rows = profile_rows(lt.steps, lt.working_set, lt.tensors, macs)
    return build_plan("layer", graph, memory, steps, lt.tensors, rows, check=check)
