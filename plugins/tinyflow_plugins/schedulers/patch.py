"""The `patch` scheduler (MCUNetV2 patch-based inference) with a real arena plan.

The first `patch_blocks` blocks (the stem is block 0, so `patch_blocks: 5` = stem + 4 MBConv blocks) run patch by
patch on an `n_patches × n_patches` grid of their output; the rest of the network runs layer by layer with the
layer scheduler's lifetime rules (`tinyflow.memory.lifetimes.compute_lifetimes` on the remaining sub-graph).

Memory model of the patch stage (DESIGN §3 conventions, applied per patch):
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
from dataclasses import asdict, dataclass, replace
from types import SimpleNamespace
from typing import Any

from tinyflow.contracts import MemoryConfig, SchedulerBase
from tinyflow.errors import ConfigError
from tinyflow.ir.graph import Graph, Node
from tinyflow.ir.ops import get_op
from tinyflow.memory.arena import arena_size, assign_offsets, check_no_overlap, place
from tinyflow.memory.layer_plan import layer_plan, profile_rows
from tinyflow.memory.lifetimes import Lifetimes, check_memory_config, compute_lifetimes, working_sets
from tinyflow.memory.plan import ExecutionPlan, Step, TensorAlloc
from tinyflow.memory.receptive_field import (
    PatchGeometry,
    graph_patch_geometry,
    max_patch_blocks,
    op_macs,
)

AUTO = "auto"


@dataclass
class _Candidate:
    patch_blocks: int
    n_patches: int
    peak: int
    extra_macs: int


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
    graph: Graph, memory: MemoryConfig, patch_blocks: int, n_patches: int, check: bool = True, placement: bool = True
) -> ExecutionPlan:
    """Plan `graph` with its first `patch_blocks` blocks run on an `n_patches × n_patches` grid.

    `placement=False` skips the arena layout (offsets stay -1, arena_bytes 0): the `auto` search ranks by peak.
    """
    check_memory_config(memory)
    geo = graph_patch_geometry(graph, patch_blocks, n_patches)
    rest = _rest_graph(graph, geo)
    stage_nodes = [graph[op.output] for op in geo.ops]
    inp, out = geo.stage_input, geo.stage_output

    steps: list[Step] = []
    step_views: list[SimpleNamespace] = []  # what working_sets needs of a step: output name and input names
    tensors: dict[str, TensorAlloc] = {}
    last_read: dict[str, int] = {}

    in_node = graph[inp]
    tensors[inp] = TensorAlloc(
        inp,
        (in_node.numel * _elem_bytes(in_node, memory)) if memory.count_input else 0,
        0,
        0,
        buffer=inp,
        is_input=True,
    )
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
            steps.append(
                Step(
                    i,
                    node.name,
                    node.op,
                    node.block,
                    ins,
                    [oname],
                    op_macs(op, patch.tensors[op.output]),
                    0,
                    patch=(patch.row, patch.col),
                    extra={"region": list(patch.tensors[op.output].as_tuple())},
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
        steps.append(Step(n_stage + j, node.name, node.op, node.block, list(node.inputs), [node.name], rest_macs[j], 0))
        step_views.append(SimpleNamespace(name=node.name, inputs=list(node.inputs)))
    if not lt_rest.steps:  # the whole network is the patch stage
        tensors[out].last_step = n_stage - 1

    all_t = list(tensors.values())
    ws = working_sets(step_views, all_t, memory.rule)
    for s, w in zip(steps, ws):
        s.working_set_bytes = w
    peak = max(ws)
    peak_step = ws.index(peak)
    lt = Lifetimes(step_views, all_t, ws, peak, peak_step)  # type: ignore[arg-type]
    arena = 0
    if placement:
        buffers = lt.buffers()
        offsets = place(buffers, memory.arena_algorithm)
        assign_offsets(all_t, offsets)
        arena = arena_size(buffers, offsets)
        if check:
            check_no_overlap(all_t)

    per_layer = _stage_rows(graph, geo, steps[:n_stage], tensors) + _rest_rows(rest, lt_rest, ws[n_stage:], rest_macs)
    total_macs = sum(s.macs for s in steps)
    layer_macs = graph.macs()
    peak_s = steps[peak_step]
    return ExecutionPlan(
        scheduler="patch",
        graph=graph.name,
        memory=asdict(memory),
        steps=steps,
        tensors=all_t,
        peak_live_bytes=peak,
        arena_bytes=arena,
        macs=total_macs,
        params=graph.params(),
        peak_layer=peak_s.node,
        per_layer=per_layer,
        arena_algorithm=memory.arena_algorithm,
        extra={
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
        },
    )


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


def _rest_rows(rest: Graph, lt: Lifetimes, ws: Sequence[int], macs: Sequence[int]) -> list[dict]:
    lt2 = Lifetimes(lt.steps, lt.tensors, list(ws), lt.peak_live_bytes, lt.peak_step)
    return profile_rows(rest, lt2, macs)


# ---------------------------------------------------------------- peak-only evaluation for `auto`
def _peak_only(graph: Graph, memory: MemoryConfig, patch_blocks: int, n_patches: int) -> tuple[int, int]:
    """(peak_live_bytes, extra MACs) of a patch plan, without arena placement (for the `auto` search)."""
    plan = patch_plan(graph, memory, patch_blocks, n_patches, check=False, placement=False)
    return plan.peak_live_bytes, plan.extra["extra_macs"]


def _parse(value: Any, option: str) -> int | str:
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    if isinstance(value, bool):
        raise ConfigError(f"scheduler.{option} = {value!r}: give a positive integer or 'auto'")
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"scheduler.{option} = {value!r}: give a positive integer or 'auto'") from None
    if n < 1 or (isinstance(value, float) and n != value):
        raise ConfigError(f"scheduler.{option} = {value!r}: give a positive integer or 'auto'")
    return n


def _search_choices(choices: dict[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]]:
    """`scheduler.search_choices`, checked: only `n_patches` / `patch_blocks`, each a non-empty list of ints ≥ 1."""
    choices = {"n_patches": (1, 2, 3, 4), "patch_blocks": (2, 3, 4, 5)} if choices is None else dict(choices)
    unknown = sorted(set(choices) - {"n_patches", "patch_blocks"})
    if unknown:
        raise ConfigError(f"scheduler.search_choices: unknown option(s) {unknown}; use n_patches and patch_blocks.")
    out = {k: tuple(int(v) for v in vs) for k, vs in choices.items()}
    if any(not vs or min(vs) < 1 for vs in out.values()):
        raise ConfigError(f"scheduler.search_choices must give non-empty lists of positive integers, got {choices}.")
    return out


class PatchScheduler(SchedulerBase):
    """`scheduler=patch`: MCUNetV2 patch-based inference; `auto` options pick the lowest peak.

    `n_patches_choices` is the grid sizes `n_patches: auto` tries; `max_extra_macs` (a fraction of the network's
    MACs, or None) rejects auto candidates that recompute more than that. `search_choices` are the options a
    joint search (`strategy.joint=true`) varies with the arch, and the values it draws them from.
    """

    name = "patch"

    def __init__(
        self,
        n_patches: int | str = 4,
        patch_blocks: int | str = 5,
        n_patches_choices: Sequence[int] = (2, 3, 4, 5, 6, 7, 8),
        max_extra_macs: float | None = None,
        search_choices: dict[str, Sequence[int]] | None = None,
    ):
        self.n_patches = _parse(n_patches, "n_patches")
        self.patch_blocks = _parse(patch_blocks, "patch_blocks")
        self.n_patches_choices = tuple(int(n) for n in n_patches_choices)
        self.max_extra_macs = max_extra_macs
        self.search_choices = _search_choices(search_choices)

    def search_options(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.search_choices.items()}

    def plan(self, graph: Graph, memory: MemoryConfig) -> ExecutionPlan:
        if self.n_patches != AUTO and self.patch_blocks != AUTO:
            return patch_plan(graph, memory, int(self.patch_blocks), int(self.n_patches))
        return self._auto(graph, memory)

    def _candidates(self, graph: Graph) -> list[tuple[int, int]]:
        top = max_patch_blocks(graph)
        blocks = range(1, top + 1) if self.patch_blocks == AUTO else [int(self.patch_blocks)]
        grids = self.n_patches_choices if self.n_patches == AUTO else (int(self.n_patches),)
        out = []
        for pb in blocks:
            try:
                hw = min(graph_patch_geometry(graph, pb, 1).ops[-1].out_hw)
            except ConfigError:
                if self.patch_blocks != AUTO:
                    raise
                continue  # this block boundary cannot end a patch stage
            for n in grids:
                if n <= hw or self.n_patches != AUTO:
                    out.append((pb, n))
        return out

    def _auto(self, graph: Graph, memory: MemoryConfig) -> ExecutionPlan:
        base = layer_plan(graph, memory)
        budget = None if self.max_extra_macs is None else self.max_extra_macs * graph.macs()
        tried: list[_Candidate] = []
        for pb, n in self._candidates(graph):
            peak, extra = _peak_only(graph, memory, pb, n)
            tried.append(_Candidate(pb, n, peak, extra))
        ok = [c for c in tried if budget is None or c.extra_macs <= budget]
        search = {
            "n_patches": self.n_patches,
            "patch_blocks": self.patch_blocks,
            "candidates": len(tried),
            "layer_peak_live_bytes": base.peak_live_bytes,
            "layer_arena_bytes": base.arena_bytes,
        }
        if ok:
            best = min(ok, key=lambda c: (c.peak, c.extra_macs, c.patch_blocks, c.n_patches))
            plan = patch_plan(graph, memory, best.patch_blocks, best.n_patches)
            if plan.peak_live_bytes < base.peak_live_bytes and plan.arena_bytes <= base.arena_bytes:
                plan.extra["auto"] = search
                return plan
            why = (
                f"the best patch plan (patch_blocks={best.patch_blocks}, n_patches={best.n_patches}: peak "
                f"{plan.peak_live_bytes} B, arena {plan.arena_bytes} B) is not better than layer (peak "
                f"{base.peak_live_bytes} B, arena {base.arena_bytes} B)"
            )
        else:
            why = "no patch grid fits scheduler.max_extra_macs" if tried else "no block boundary can end a patch stage"
        base.extra.update(
            {
                "fallback": f"patch: fell back to the layer plan: {why}",
                "auto": search,
                "n_patches": None,
                "patch_blocks": 0,
                "input_patch_hw": None,
                "patch_stage_macs": 0,
                "patch_stage_macs_layerwise": 0,
                "extra_macs": 0,
            }
        )
        base.scheduler = "patch"
        return base
