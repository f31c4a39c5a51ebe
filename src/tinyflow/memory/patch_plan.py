"""The `patch` plan (MCUNetV2 patch-based inference): the first blocks run patch by patch, the rest layer by layer.

The first `patch_blocks` blocks (the stem is block 0, so `patch_blocks: 5` = stem + 4 MBConv blocks) run patch by
patch on an `n_patches × n_patches` grid of their output (geometry: `tinyflow.memory.receptive_field`); the rest
of the network runs layer by layer with the layer plan's lifetime rules (`compute_lifetimes` on the remaining
sub-graph).

Memory model of the patch stage (the layer plan's conventions, applied per patch):
- every tensor inside the stage gets a per-patch buffer sized for the largest patch (one instance per patch,
  alive from the op that writes it to the last op of that patch that reads it); in-place depthwise / element-wise
  ops share their input's buffer under the same rules as the layer plan;
- the network input is read where it lies (no copy): it stays alive until the last patch has read it, and is
  not counted with `memory.count_input: false` (a streamed input);
- the stage output is one full buffer: the stage's last op of each patch writes its region there; it is alive
  from the first patch's write until the rest of the network last reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from tinyflow.errors import ConfigError
from tinyflow.ir.graph import Graph, Node
from tinyflow.ir.ops import get_op
from tinyflow.memory.builder import build_plan
from tinyflow.memory.config import MemoryConfig, check_memory_config
from tinyflow.memory.layer_plan import profile_rows
from tinyflow.memory.lifetimes import compute_lifetimes, working_sets
from tinyflow.memory.plan import ExecutionPlan, Step, TensorAlloc
from tinyflow.memory.receptive_field import PatchGeometry, graph_patch_geometry, op_macs


def _elem_bytes(node: Node, memory: MemoryConfig) -> int:
    return node.elem_bytes or memory.dtype_bytes


def _rest_graph(graph: Graph, geo: PatchGeometry) -> Graph:
    """The network after the patch stage, whose input is the assembled stage output."""
    inside = {op.output for op in geo.ops} | {geo.stage_input}
    out = graph[geo.stage_output]
    sub = Graph(f"{graph.name}[after patch stage]")
    sub.add(out.name, "input", (), {"shape": out.shape}, block=out.block, elem_bytes=out.elem_bytes)
    for node in graph.topological_order():
        if node.name in inside:
            continue
        if geo.stage_input in node.inputs:
            raise ConfigError(
                f"scheduler.patch_blocks: node '{node.name}' after the patch stage reads the network input "
                f"'{geo.stage_input}' directly, so the input cannot be streamed patch by patch; use scheduler=layer"
            )
        sub.add(node.name, node.op, node.inputs, node.attrs, node.block, node.weights, node.elem_bytes)
    sub.set_outputs(graph.outputs)
    return sub


def patch_plan(
    graph: Graph,
    memory: MemoryConfig,
    patch_blocks: int,
    n_patches: int,
    check: bool = True,
    placement: bool = True,
    geometry: PatchGeometry | None = None,
) -> ExecutionPlan:
    """Plan `graph` with its first `patch_blocks` blocks run on an `n_patches × n_patches` grid.

    `placement=False` skips the arena layout (offsets stay -1, arena_bytes 0): a search may rank by peak.
    `geometry`: the stage's geometry when the caller already has it (the policy computes it to rank candidates).
    """
    check_memory_config(memory)
    geo = geometry if geometry is not None else graph_patch_geometry(graph, patch_blocks, n_patches)
    rest = _rest_graph(graph, geo)
    stage_nodes = [graph[op.output] for op in geo.ops]
    inp, out = geo.stage_input, geo.stage_output

    steps: list[Step] = []
    step_views: list[SimpleNamespace] = []  # what working_sets needs of a step: output name and input names
    tensors: dict[str, TensorAlloc] = {}
    last_read: dict[str, int] = {}

    in_node = graph[inp]
    in_size = (in_node.numel * _elem_bytes(in_node, memory)) if memory.count_input else 0
    tensors[inp] = TensorAlloc(inp, in_size, 0, 0, buffer=inp, is_input=True)
    out_node = graph[out]
    tensors[out] = TensorAlloc(out, out_node.numel * _elem_bytes(out_node, memory), -1, -1, buffer=out)

    # ---- the patch stage: one step per (patch, op)
    for patch in geo.patches:
        tag = f"@{patch.row},{patch.col}"

        def name_of(t: str, tag: str = tag) -> str:
            return t if t in (inp, out) else t + tag

        for op, node in zip(geo.ops, stage_nodes):
            if op.output not in patch.tensors:
                continue
            i = len(steps)
            ins = [name_of(t) for t in node.inputs]
            oname = name_of(node.name)
            for t in ins:
                last_read[t] = i
            if oname == out:
                if tensors[out].first_step < 0:
                    tensors[out].first_step = i
            else:
                h, w = geo.buffer_hw[node.name]
                size = node.shape[1] * h * w * _elem_bytes(node, memory)
                t = TensorAlloc(oname, size, i, i, buffer=oname)
                if len(ins) == 1 and ins[0] != inp:
                    src = tensors[ins[0]]
                    kind = get_op(node.op).alias_kind(node, [graph[node.inputs[0]].shape])
                    inplace = kind == "inplace" or (kind == "inplace_depthwise" and memory.inplace_depthwise)
                    # the source's buffer must die here (no later reader within this patch)
                    if inplace and 0 < size <= src.size and _dies_at(node.inputs[0], node.name, geo):
                        t.buffer, t.alias_of, t.alias_kind = src.buffer, src.name, "inplace"
                tensors[oname] = t
            region = patch.tensors[op.output]
            steps.append(
                Step(
                    i,
                    node.name,
                    node.op,
                    node.block,
                    ins,
                    [oname],
                    op_macs(op, region),
                    0,
                    patch=(patch.row, patch.col),
                    extra={"region": list(region.as_tuple())},
                    kind="patch",
                )
            )
            step_views.append(SimpleNamespace(name=oname, inputs=ins))
    n_stage = len(steps)
    for name, t in tensors.items():
        if name not in (inp, out):
            t.last_step = max(t.first_step, last_read.get(name, t.first_step))
    tensors[inp].last_step = last_read.get(inp, 0)

    # ---- the rest, layer by layer, with the layer plan's lifetime rules
    lt_rest = compute_lifetimes(rest, replace(memory, count_input=True))
    for t in lt_rest.tensors:
        if t.name == out:  # the assembled buffer: alive from the first patch write to its last reader
            tensors[out].last_step = n_stage + t.last_step
            continue
        t.first_step += n_stage
        t.last_step += n_stage
        tensors[t.name] = t
    rest_macs = [rest.node_macs(n) for n in lt_rest.steps]
    for j, node in enumerate(lt_rest.steps):
        steps.append(
            Step(
                n_stage + j,
                node.name,
                node.op,
                node.block,
                list(node.inputs),
                [node.name],
                rest_macs[j],
                0,
                kind="layer",
            )
        )
        step_views.append(SimpleNamespace(name=node.name, inputs=list(node.inputs)))
    if not lt_rest.steps:  # the whole network is the patch stage
        tensors[out].last_step = n_stage - 1

    all_t = list(tensors.values())
    ws = working_sets(step_views, all_t, memory.rule)  # type: ignore[arg-type]
    for s, w in zip(steps, ws):
        s.working_set_bytes = w
    per_layer = _stage_rows(graph, geo, steps[:n_stage], tensors) + profile_rows(
        lt_rest.steps, ws[n_stage:], lt_rest.tensors, rest_macs
    )
    total_macs = sum(s.macs for s in steps)
    layer_macs = graph.macs()
    peak_s = steps[ws.index(max(ws))]
    extra = {
        "n_patches": n_patches,
        "patch_blocks": patch_blocks,
        "input_patch_hw": list(geo.input_patch_hw),
        "receptive_field_hw": list(geo.receptive_field_hw),
        "patch_stage_output": out,
        "patch_stage_output_shape": list(out_node.shape),
        "output_patch_hw": list(geo.buffer_hw[out]),
        "patch_stage_macs": geo.patch_stage_macs,
        "patch_stage_macs_layerwise": geo.patch_stage_macs_layerwise,
        "extra_macs": total_macs - layer_macs,
        "extra_macs_ratio": (total_macs - layer_macs) / layer_macs if layer_macs else 0.0,
        "layer_macs": layer_macs,
        "peak_patch": list(peak_s.patch) if peak_s.patch is not None else None,
    }
    return build_plan("patch", graph, memory, steps, all_t, per_layer, extra=extra, check=check, placement=placement)


def _dies_at(src: str, reader: str, geo: PatchGeometry) -> bool:
    """Whether `reader` is the last op of the stage that reads `src` (so it may run in place on it)."""
    readers = [op.output for op in geo.ops if src in op.inputs]
    return bool(readers) and readers[-1] == reader


def _stage_rows(graph: Graph, geo: PatchGeometry, steps: Sequence[Step], tensors: dict[str, TensorAlloc]) -> list[dict]:
    """One profile row per op of the patch stage: the worst patch's working set, MACs summed over patches."""
    rows: dict[str, dict[str, Any]] = {}
    for s in steps:
        node = graph[s.node]
        row = rows.get(s.node)
        if row is None:
            h, w = geo.buffer_hw[s.node]
            row = rows[s.node] = {
                "name": s.node,
                "op": s.op,
                "block": s.block,
                "output_shape": list(node.shape),
                "patch_output_shape": [node.shape[0], node.shape[1], h, w],
                "input_bytes": sum(tensors[t].size for t in s.inputs),
                "output_bytes": tensors[s.outputs[0]].size,
                "working_set_bytes": 0,
                "macs": 0,
                "patched": True,
            }
        row["working_set_bytes"] = max(row["working_set_bytes"], s.working_set_bytes)
        row["macs"] += s.macs
    return list(rows.values())
