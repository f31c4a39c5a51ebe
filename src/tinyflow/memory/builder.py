"""The one builder of `ExecutionPlan`: every planner (layer, patch, rnnpool) hands it its steps and tensors.

A planner decides what runs when (steps, with their working sets) and what lives when (tensors, with their
buffers); `build_plan` does the rest the same way for all of them: the peak and where it is, the arena placement
under `memory.arena_algorithm`, the overlap check, the MAC and parameter totals, and the memory convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from tinyflow.ir.graph import Graph
from tinyflow.memory.arena import BufferSpec, arena_size, assign_offsets, check_no_overlap, place
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.lifetimes import buffers_of
from tinyflow.memory.plan import ExecutionPlan, Step, TensorAlloc


def build_plan(
    scheduler: str,
    graph: Graph,
    memory: MemoryConfig,
    steps: list[Step],
    tensors: list[TensorAlloc],
    per_layer: list[dict[str, Any]],
    *,
    buffers: Sequence[BufferSpec] | None = None,
    extra: dict[str, Any] | None = None,
    check: bool = True,
    placement: bool = True,
    patch_peak_suffix: str = "",
) -> ExecutionPlan:
    """A placed, checked `ExecutionPlan` of `steps` (working sets already set) over `tensors`.

    `buffers` default to `buffers_of(tensors)` (one per storage, with its occupancy pieces). `placement=False`
    leaves offsets at -1 and `arena_bytes` 0 (for a search that ranks by peak); `check=False` skips the overlap
    check. `patch_peak_suffix` is appended to `peak_layer` when the peak step runs on one patch."""
    ws = [s.working_set_bytes for s in steps]
    peak = max(ws, default=0)
    peak_layer = ""
    if steps:
        peak_step = steps[ws.index(peak)]
        peak_layer = peak_step.node + (patch_peak_suffix if peak_step.kind != "layer" else "")
    arena = 0
    if placement:
        buffers = buffers_of(tensors) if buffers is None else buffers
        offsets = place(buffers, memory.arena_algorithm)
        assign_offsets(tensors, offsets)
        arena = arena_size(buffers, offsets)
        if check:
            check_no_overlap(tensors)
    return ExecutionPlan(
        scheduler=scheduler,
        graph=graph.name,
        memory=asdict(memory),
        steps=steps,
        tensors=tensors,
        peak_live_bytes=peak,
        arena_bytes=arena,
        macs=sum(s.macs for s in steps),
        params=graph.params(),
        peak_layer=peak_layer,
        per_layer=per_layer,
        arena_algorithm=memory.arena_algorithm,
        extra=dict(extra or {}),
    )
