"""The layer-by-layer plan (TF Lite Micro / TinyEngine): every op over its whole tensor, one after another."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from tinyflow.contracts import MemoryConfig
from tinyflow.ir.graph import Graph, Node
from tinyflow.memory.arena import arena_size, assign_offsets, check_no_overlap, place
from tinyflow.memory.lifetimes import Lifetimes, compute_lifetimes
from tinyflow.memory.plan import ExecutionPlan, Step


def profile_rows(graph: Graph, lt: Lifetimes, macs: Sequence[int]) -> list[dict]:
    """Per-layer memory profile: one row per op."""
    index = {t.name: t for t in lt.tensors}
    rows = []
    for i, node in enumerate(lt.steps):
        rows.append(
            {
                "name": node.name,
                "op": node.op,
                "block": node.block,
                "output_shape": list(node.shape),
                "input_bytes": sum(index[s].size for s in node.inputs),
                "output_bytes": index[node.name].size,
                "working_set_bytes": lt.working_set[i],
                "macs": macs[i],
            }
        )
    return rows


def layer_plan(
    graph: Graph, memory: MemoryConfig, order: Sequence[Node] | None = None, check: bool = True
) -> ExecutionPlan:
    """Plan `graph` op by op: lifetimes, working sets, an arena placement, checked for overlaps."""
    lt = compute_lifetimes(graph, memory, order)
    buffers = lt.buffers()
    offsets = place(buffers, memory.arena_algorithm)
    assign_offsets(lt.tensors, offsets)
    if check:
        check_no_overlap(lt.tensors)
    macs = [graph.node_macs(n) for n in lt.steps]
    steps = [
        Step(i, n.name, n.op, n.block, list(n.inputs), [n.name], macs[i], lt.working_set[i])
        for i, n in enumerate(lt.steps)
    ]
    return ExecutionPlan(
        scheduler="layer",
        graph=graph.name,
        memory=asdict(memory),
        steps=steps,
        tensors=lt.tensors,
        peak_live_bytes=lt.peak_live_bytes,
        arena_bytes=arena_size(buffers, offsets),
        macs=sum(macs),
        params=graph.params(),
        peak_layer=lt.peak_layer,
        per_layer=profile_rows(graph, lt, macs),
        arena_algorithm=memory.arena_algorithm,
    )
