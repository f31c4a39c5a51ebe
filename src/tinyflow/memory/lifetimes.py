"""Tensor lifetimes and working sets of a whole-tensor (layer-by-layer) schedule (docs/design.md §6).

- A tensor is alive from the step that writes it to the last step that reads it (a residual input stays
  alive through its block, because the block's `add` reads it). Graph outputs live to the last step; graph
  inputs from step 0.
- In-place ops share their input's storage when the input dies at that op (depthwise conv only with
  `memory.inplace_depthwise`, element-wise ops only with `memory.inplace_elementwise`); views (flatten/reshape)
  always share it. Sizes are rounded up to `memory.alignment`. Tensors sharing storage form a buffer;
  at any step a buffer holds max(size of its live members).
- `memory.count_input: false` gives the network input size 0 (a streamed input is not in the arena).
- `rule: liveness` counts every live buffer at a step; `rule: layer_local` only the op's own inputs and output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tinyflow.ir.graph import Graph, Node
from tinyflow.ir.ops import get_op
from tinyflow.memory.config import MemoryConfig, check_memory_config
from tinyflow.memory.plan import TensorAlloc


@dataclass
class Lifetimes:
    """Result of `compute_lifetimes`: the op steps and every tensor (placement offsets still unset)."""

    steps: list[Node]  # the ops in execution order (graph inputs excluded)
    tensors: list[TensorAlloc]  # one per node (inputs included), in topological order
    working_set: list[int]  # bytes per step under `memory.rule`
    peak_live_bytes: int
    peak_step: int

    @property
    def peak_layer(self) -> str:
        return self.steps[self.peak_step].name if self.steps else ""

    def buffers(self) -> list[tuple[str, int, int, int, tuple[tuple[int, int, int], ...]]]:
        """The arena buffers of these tensors (see `buffers_of`)."""
        return buffers_of(self.tensors)


def buffers_of(tensors: Sequence[TensorAlloc]) -> list[tuple[str, int, int, int, tuple[tuple[int, int, int], ...]]]:
    """(name, size = largest occupancy, first step, last step, pieces) per buffer, for arena placement.

    Pieces are (first, last, bytes) runs of the buffer's occupancy: the largest live member at each step (an
    in-place stride-2 depthwise output holds only the front of its input's buffer)."""
    groups: dict[str, list[TensorAlloc]] = {}
    for t in tensors:
        groups.setdefault(t.buffer, []).append(t)
    out = []
    for name, members in groups.items():
        first = min(t.first_step for t in members)
        last = max(t.last_step for t in members)
        if len(members) == 1:
            pieces: tuple[tuple[int, int, int], ...] = ((first, last, members[0].size),)
        else:
            runs: list[list[int]] = []
            for i in range(first, last + 1):
                size = max((t.size for t in members if t.first_step <= i <= t.last_step), default=0)
                if runs and runs[-1][2] == size:
                    runs[-1][1] = i
                else:
                    runs.append([i, i, size])
            pieces = tuple((a, b, c) for a, b, c in runs)
        out.append((name, max(p[2] for p in pieces), first, last, pieces))
    return out


def tensor_bytes(node: Node, memory: MemoryConfig) -> int:
    """Bytes of `node`'s tensor, rounded up to `memory.alignment` (TF Lite Micro aligns every buffer to 16)."""
    n = 1
    for d in node.shape:
        n *= d
    size = n * (node.elem_bytes or memory.dtype_bytes)
    a = memory.alignment
    return -(-size // a) * a


def compute_lifetimes(graph: Graph, memory: MemoryConfig, order: Sequence[Node] | None = None) -> Lifetimes:
    """Lifetimes, aliasing and per-step working sets of running `graph` op by op in `order`."""
    check_memory_config(memory)
    order = list(order) if order is not None else graph.topological_order()
    steps = [n for n in order if n.op != "input"]
    step_of = {n.name: i for i, n in enumerate(steps)}
    last_step = len(steps) - 1
    outputs = set(graph.outputs)

    last_read: dict[str, int] = {}
    for i, n in enumerate(steps):
        for src in n.inputs:
            last_read[src] = i
    tensors: dict[str, TensorAlloc] = {}
    buffer_last: dict[str, int] = {}
    for n in order:
        is_input = n.op == "input"
        first = 0 if is_input else step_of[n.name]
        last = last_step if n.name in outputs else last_read.get(n.name, first)
        size = 0 if (is_input and not memory.count_input) else tensor_bytes(n, memory)
        t = TensorAlloc(n.name, size, first, last, buffer=n.name, is_input=is_input)
        if not is_input and len(n.inputs) == 1:
            src = tensors[n.inputs[0]]
            kind = get_op(n.op).alias_kind(n, [graph.nodes[n.inputs[0]].shape])
            inplace = (kind == "inplace" and memory.inplace_elementwise) or (
                kind == "inplace_depthwise" and memory.inplace_depthwise
            )
            if kind == "view" or (inplace and buffer_last[src.buffer] == first and 0 < size <= src.size):
                if kind == "view":
                    t.size = src.size  # the same bytes (an uncounted input stays uncounted)
                t.buffer, t.alias_of = src.buffer, src.name
                t.alias_kind = "view" if kind == "view" else "inplace"
        tensors[n.name] = t
        buffer_last[t.buffer] = max(buffer_last.get(t.buffer, -1), last)

    all_t = list(tensors.values())
    ws = working_sets(steps, all_t, memory.rule)
    peak = max(ws) if ws else 0
    return Lifetimes(steps, all_t, ws, peak, ws.index(peak) if ws else 0)


def working_sets(steps: Sequence[Node], tensors: Sequence[TensorAlloc], rule: str) -> list[int]:
    """Bytes held at each step: per buffer the largest live member, summed over buffers (docs/design.md §6)."""
    n = len(steps)
    by_buffer: dict[str, list[TensorAlloc]] = {}
    for t in tensors:
        by_buffer.setdefault(t.buffer, []).append(t)
    ws = [0] * n
    if rule == "liveness":
        diff = [0] * (n + 1)  # single-tensor buffers: a difference array, summed once below
        for members in by_buffer.values():
            if len(members) == 1:
                t = members[0]
                if t.first_step < n:
                    diff[t.first_step] += t.size
                    diff[min(t.last_step, n - 1) + 1] -= t.size
                continue
            lo = min(t.first_step for t in members)
            hi = min(max(t.last_step for t in members), n - 1)
            for i in range(lo, hi + 1):
                ws[i] += max((t.size for t in members if t.first_step <= i <= t.last_step), default=0)
        running = 0
        for i in range(n):
            running += diff[i]
            ws[i] += running
        return ws
    # layer_local: the op's own inputs and output, storage shared by aliases counted once (largest member)
    index = {t.name: t for t in tensors}
    for i, node in enumerate(steps):
        per_buf: dict[str, int] = {}
        for name in (*node.inputs, node.name):
            t = index[name]
            per_buf[t.buffer] = max(per_buf.get(t.buffer, 0), t.size)
        ws[i] = sum(per_buf.values())
    return ws


def peak_live_bytes(graph: Graph, memory: MemoryConfig | None = None) -> int:
    """The lower bound on SRAM for activations: max over ops of the working set (docs/design.md §6)."""
    return compute_lifetimes(graph, memory or MemoryConfig()).peak_live_bytes
