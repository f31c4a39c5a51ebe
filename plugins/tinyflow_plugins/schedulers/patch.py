"""The `patch` scheduler (MCUNetV2 patch-based inference): option parsing and `auto` over the core planner.

The planner itself is `tinyflow.memory.patch_plan.patch_plan` (the first `patch_blocks` blocks run on an
`n_patches × n_patches` grid, the rest layer by layer). This plugin parses the options and, for `auto`, picks
the block boundary and grid with the lowest peak (falling back to the layer plan when no patch plan beats it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tinyflow.contracts import SchedulerBase
from tinyflow.errors import ConfigError
from tinyflow.ir.graph import Graph
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan
from tinyflow.memory.patch_plan import patch_plan
from tinyflow.memory.plan import ExecutionPlan
from tinyflow.memory.receptive_field import graph_patch_geometry, max_patch_blocks

AUTO = "auto"


@dataclass
class _Candidate:
    patch_blocks: int
    n_patches: int
    peak: int
    extra_macs: int


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
