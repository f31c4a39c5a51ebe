"""The patch scheduler's policy (docs/design.md §7): the cheapest plan of a network that fits an SRAM budget.

Layer first: when the layer plan fits, patching only adds recomputation, so the layer plan is the answer.
Otherwise the patch candidates (a block boundary `patch_blocks` × a grid `n_patches`) are tried in order of
their extra MACs (receptive-field overlap, from the geometry alone) and the first whose plan fits wins — or,
with a cost function (a cost model's latency), the fitting one it prices lowest. Candidates over
`max_extra_macs` (a fraction of the network's MACs) are never taken. When nothing fits, the plan with the lowest
peak is returned with the amount it is over (`over_budget_bytes`, "does not fit by N KiB"), for a search to
reject. Without a budget (`budget_bytes=None`) nothing "fits" and the lowest peak is returned.

Two prunings keep this fast enough for a search: the rest of the network runs layer by layer with the layer
plan's working sets, so a boundary whose later layers already exceed the budget cannot fit (`_rest_floor`);
and the extra MACs of a candidate come from its geometry before any memory plan is made.

Every returned plan says what was chosen and why: `extra["schedule"]` (`{}` for the layer plan, else
`{"patch_blocks": .., "n_patches": ..}`), `extra["schedule_used"]` and `extra["schedule_reason"]`.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from tinyflow.errors import ConfigError
from tinyflow.ir.graph import Graph
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan
from tinyflow.memory.lifetimes import compute_lifetimes
from tinyflow.memory.patch_plan import patch_plan
from tinyflow.memory.plan import ExecutionPlan
from tinyflow.memory.receptive_field import (
    Interval,
    PatchGeometry,
    Region,
    graph_patch_geometry,
    max_patch_blocks,
    patch_stage,
    split_axis,
    walk_back,
)

log = logging.getLogger(__name__)

KIB = 1024.0


@dataclass(frozen=True)
class PolicyOptions:
    """What the policy may choose from. `patch_blocks` / `n_patches`: a fixed value, or None (any).

    `strict`: an invalid fixed value (a grid finer than the stage's output map, a boundary past what can be
    patched) raises ConfigError — analysing one network; otherwise it is clamped to the nearest valid value with
    a logged warning (a search or a pipeline must not fail on one candidate).
    """

    patch_blocks: int | None = None
    n_patches: int | None = None
    grids: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    max_extra_macs: float | None = 0.5
    metric: str = "arena"  # what must fit: the placed arena, or peak_live (a search's lower bound)
    strict: bool = False
    #: the firmware's own SRAM beside the arena for a plan (kernel scratch, stack, I/O: runtime_overhead.predict);
    #: given, a plan fits when metric + overhead(graph, plan) ≤ the budget — priced per candidate, so a patch plan's
    #: smaller scratch buys a coarser grid; None: the budget is the metric's alone
    overhead: Callable[[Graph, ExecutionPlan], int] | None = None


class _Candidate:
    """A (patch_blocks, n_patches) whose geometry (hence extra MACs) is computed when first asked for."""

    def __init__(self, graph: Graph, patch_blocks: int, n_patches: int):
        self.graph, self.patch_blocks, self.n_patches = graph, patch_blocks, n_patches
        self._geo: PatchGeometry | None = None
        self._extra: int | None = None
        self.peak: int | None = None

    @property
    def geometry(self) -> PatchGeometry:
        if self._geo is None:
            self._geo = graph_patch_geometry(self.graph, self.patch_blocks, self.n_patches)
        return self._geo

    @property
    def extra_macs(self) -> int:
        if self._extra is None:
            self._extra = separable_extra_macs(self.graph, self.patch_blocks, self.n_patches)
        return self._extra


def separable_extra_macs(graph: Graph, patch_blocks: int, n_patches: int) -> int:
    """The patch stage's extra MACs (what `PatchGeometry.extra_macs` gives) from 2·n one-axis walks instead of n²
    two-axis ones: rows and columns are walked independently, so the area an op computes over all patches is
    (Σ rows)·(Σ columns) of its per-patch regions."""
    ops, stage_input = patch_stage(graph, patch_blocks)
    out_h, out_w = ops[-1].out_hw
    if n_patches > min(out_h, out_w):
        raise ConfigError(f"scheduler.n_patches = {n_patches} is finer than the stage output {out_h}×{out_w}")
    rows = {op.output: 0 for op in ops}
    cols = {op.output: 0 for op in ops}
    for part in split_axis(out_h, n_patches):
        need, _ = walk_back(ops, Region(part, Interval(0, out_w)), stage_input)
        for t in rows:
            rows[t] += need[t].h.size if t in need else 0
    for part in split_axis(out_w, n_patches):
        need, _ = walk_back(ops, Region(Interval(0, out_h), part), stage_input)
        for t in cols:
            cols[t] += need[t].w.size if t in need else 0
    extra = 0
    for op in ops:
        full = op.out_hw[0] * op.out_hw[1]
        if full:
            extra += op.macs * rows[op.output] * cols[op.output] // full - op.macs
    return extra


def _kib(n: float) -> str:
    return f"{n / KIB:.1f} KiB"


def schedule_label(schedule: dict[str, int]) -> str:
    """`layer`, or `patch 2x2 over 4 blocks`."""
    if not schedule:
        return "layer"
    n, pb = schedule["n_patches"], schedule["patch_blocks"]
    return f"patch {n}x{n} over {pb} blocks"


class _Warner:
    """Logs each distinct clamping message once per policy instance (a search asks thousands of times)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, msg: str) -> None:
        if msg not in self.seen:
            self.seen.add(msg)
            log.warning("%s", msg)


class PatchPolicy:
    """Chooses layer or a patch (grid, depth) for a graph under a budget; see the module docstring."""

    def __init__(self, options: PolicyOptions, cost: Callable[[Graph, ExecutionPlan], float] | None = None):
        if options.metric not in ("arena", "peak_live"):
            raise ConfigError(f"patch policy: metric must be 'arena' or 'peak_live', got {options.metric!r}.")
        self.options = options
        self.cost = cost
        self.warn = _Warner()
        self._graph: Graph | None = None  # the graph `choose` is choosing for (the overhead is priced on it)

    # ---- candidates ---------------------------------------------------------------------------------
    def _boundaries(self, graph: Graph) -> list[int]:
        top = max_patch_blocks(graph)
        pb = self.options.patch_blocks
        if pb is None:
            return list(range(1, top + 1))
        if 1 <= pb <= top:
            return [pb]
        msg = (
            f"scheduler.patch_blocks = {pb} is outside the network '{graph.name}': only blocks 0..{top - 1} (the "
            f"stem is block 0) can run patch by patch; choose patch_blocks between 1 and {top}, or 'auto'"
        )
        if self.options.strict:
            raise ConfigError(msg)
        if top < 1:
            self.warn(f"{msg} — no patch stage is possible in this network")
            return []
        self.warn(f"{msg} — clamped to {top} for this network")
        return [top]

    def _grids(self, graph: Graph, pb: int, out_hw: int) -> list[int]:
        n = self.options.n_patches
        if n is None:
            return [g for g in self.options.grids if 2 <= g <= out_hw]
        if n <= out_hw:
            return [n]
        msg = (
            f"scheduler.n_patches = {n}: a {n}×{n} patch grid is finer than the patch stage's output feature map "
            f"{out_hw}×{out_hw} of '{graph.name}' (patch_blocks={pb}); choose n_patches between 1 and {out_hw}"
        )
        if self.options.strict:
            raise ConfigError(msg)
        self.warn(f"{msg} — clamped to {out_hw} for this network")
        return [out_hw]

    def candidates(self, graph: Graph, boundaries: Sequence[int] | None = None) -> list[_Candidate]:
        """Every valid (patch_blocks, n_patches), over `boundaries` (default: all the options allow)."""
        out: list[_Candidate] = []
        fixed_pb = self.options.patch_blocks is not None
        allowed = self._boundaries(graph)
        for pb in allowed if boundaries is None else [b for b in allowed if b in boundaries]:
            try:
                hw = min(patch_stage(graph, pb)[0][-1].out_hw)
            except ConfigError:
                if fixed_pb and self.options.strict:
                    raise
                continue  # this block boundary cannot end a patch stage
            out += [_Candidate(graph, pb, n) for n in self._grids(graph, pb, hw)]
        return out

    # ---- the policy ---------------------------------------------------------------------------------
    def _measure(self, plan: ExecutionPlan) -> int:
        """What must fit the budget: the metric, plus the firmware's overhead for this plan when priced."""
        used = plan.arena_bytes if self.options.metric == "arena" else plan.peak_live_bytes
        overhead = self.options.overhead
        return used if overhead is None or self._graph is None else used + int(overhead(self._graph, plan))

    def _incl(self) -> str:
        return " (arena + firmware overhead)" if self.options.overhead is not None else ""

    def choose(self, graph: Graph, memory: MemoryConfig, budget_bytes: int | None) -> ExecutionPlan:
        """The plan the policy chooses for `graph` under `budget_bytes` (None: the lowest peak)."""
        self._graph = graph
        lt = compute_lifetimes(graph, memory)
        layer_peak = max(lt.working_set, default=0)
        layer: ExecutionPlan | None = None
        if budget_bytes is not None and layer_peak <= budget_bytes:
            layer = layer_plan(graph, memory)
            if self._measure(layer) <= budget_bytes:
                used = _kib(self._measure(layer))
                why = f"the layer plan fits: {used}{self._incl()} ≤ budget {_kib(budget_bytes)}, no recomputation"
                return self._mark_layer(layer, why, budget_bytes)
        macs = graph.macs()
        cap = None if self.options.max_extra_macs is None else self.options.max_extra_macs * macs
        floor = _rest_floor(lt)
        cands = self.candidates(graph)
        fitting: list[tuple[float, _Candidate, ExecutionPlan]] = []
        if budget_bytes is not None:
            for c in self._cheapest_first(cands, floor, budget_bytes, cap):
                c.peak = _peak(graph, memory, c)
                if c.peak > budget_bytes:
                    continue
                plan = patch_plan(graph, memory, c.patch_blocks, c.n_patches, geometry=c.geometry)
                if self._measure(plan) > budget_bytes:
                    continue
                key = float(c.extra_macs) if self.cost is None else float(self.cost(graph, plan))
                fitting.append((key, c, plan))
                if self.cost is None:
                    break  # candidates come cheapest first
        if fitting:
            key, best, plan = min(fitting, key=lambda t: (t[0], t[1].extra_macs))
            price = (
                f"the fewest extra MACs (+{best.extra_macs / macs:.1%})"
                if self.cost is None
                else f"the lowest estimated latency ({key:.2f} ms, +{best.extra_macs / macs:.1%} MACs)"
            )
            why = (
                f"the layer plan needs {_kib(layer_peak if layer is None else self._measure(layer))} > budget "
                f"{_kib(budget_bytes or 0)}; {schedule_label(_sched(best))} fits at {_kib(self._measure(plan))}"
                f"{self._incl()} with {price}"
            )
            return self._mark_patch(plan, why, budget_bytes)
        return self._lowest_peak(graph, memory, lt, layer_peak, cands, cap, budget_bytes)

    @staticmethod
    def _cheapest_first(
        cands: Sequence[_Candidate], floor: dict[int, int], budget: int, cap: float | None
    ) -> Iterator[_Candidate]:
        """Candidates that may fit, in order of extra MACs, each boundary's grids coarsest first and its next grid
        costed only when the previous one is taken — exact when the extra MACs grow with the grid (the overlap
        grows with the number of patch edges). A boundary whose later layers exceed the budget is skipped."""
        by_pb: dict[int, list[_Candidate]] = {}
        for c in cands:
            if floor.get(c.patch_blocks, 0) <= budget:  # else: the layers after the stage alone exceed it
                by_pb.setdefault(c.patch_blocks, []).append(c)
        heap: list[tuple[int, int, int]] = []
        for pb, cs in by_pb.items():
            cs.sort(key=lambda c: c.n_patches)
            heapq.heappush(heap, (cs[0].extra_macs, pb, 0))
        while heap:
            extra, pb, i = heapq.heappop(heap)
            if cap is not None and extra > cap:
                continue  # finer grids of this boundary recompute more still
            yield by_pb[pb][i]
            if i + 1 < len(by_pb[pb]):
                heapq.heappush(heap, (by_pb[pb][i + 1].extra_macs, pb, i + 1))

    def _lowest_peak(
        self,
        graph: Graph,
        memory: MemoryConfig,
        lt: object,
        layer_peak: int,
        cands: Sequence[_Candidate],
        cap: float | None,
        budget_bytes: int | None,
    ) -> ExecutionPlan:
        """Nothing fits: the lowest peak among layer and the candidates within `cap` extra MACs (branch and bound
        on the rest-of-network floor, so most candidates are never planned)."""
        floor = _rest_floor(lt)  # type: ignore[arg-type]
        best: _Candidate | None = None
        best_peak = layer_peak
        over_cap = 0
        if budget_bytes is not None and not self.options.strict:
            # a search only rejects this network: the lowest of the plans already tried is enough
            cands = [c for c in cands if c.peak is not None]
        for c in sorted(cands, key=lambda c: (floor.get(c.patch_blocks, 0), c.patch_blocks, c.n_patches)):
            if floor.get(c.patch_blocks, 0) >= best_peak:
                break  # no later candidate can go lower
            if cap is not None and c.extra_macs > cap:
                over_cap += 1
                continue
            if c.peak is None:
                c.peak = _peak(graph, memory, c)
            if c.peak < best_peak:
                best, best_peak = c, c.peak
        capped = f" ({over_cap} candidates over scheduler.max_extra_macs)" if over_cap else ""
        if best is None:
            plan = layer_plan(graph, memory)
            label = "the layer plan"
        else:
            plan = patch_plan(graph, memory, best.patch_blocks, best.n_patches, geometry=best.geometry)
            label = schedule_label(_sched(best))
        if budget_bytes is None:
            why = f"no budget given: {label} has the lowest peak, {_kib(plan.peak_live_bytes)}{capped}"
        else:
            over = self._measure(plan) - budget_bytes
            why = (
                f"does not fit by {_kib(over)}: {label} has the lowest peak, {_kib(self._measure(plan))}"
                f"{self._incl()} > budget {_kib(budget_bytes)}{capped}"
            )
        if best is None:
            return self._mark_layer(plan, why, budget_bytes)
        return self._mark_patch(plan, why, budget_bytes)

    def _finish(self, plan: ExecutionPlan, schedule: dict[str, int], why: str, budget: int | None) -> ExecutionPlan:
        plan.extra["schedule"] = schedule
        plan.extra["schedule_used"] = schedule_label(schedule)
        plan.extra["schedule_reason"] = why
        if budget is not None:
            used = self._measure(plan)
            plan.extra["schedule_budget_bytes"] = budget
            plan.extra["fits_budget"] = used <= budget
            plan.extra["over_budget_bytes"] = max(0, used - budget)
        return plan

    def _mark_layer(self, plan: ExecutionPlan, why: str, budget: int | None) -> ExecutionPlan:
        plan.extra.update(
            {
                "n_patches": None,
                "patch_blocks": 0,
                "input_patch_hw": None,
                "patch_stage_macs": 0,
                "patch_stage_macs_layerwise": 0,
                "extra_macs": 0,
                "extra_macs_ratio": 0.0,
            }
        )
        plan.scheduler = "patch"
        return self._finish(plan, {}, why, budget)

    def _mark_patch(self, plan: ExecutionPlan, why: str, budget: int | None) -> ExecutionPlan:
        sched = {"patch_blocks": int(plan.extra["patch_blocks"]), "n_patches": int(plan.extra["n_patches"])}
        return self._finish(plan, sched, why, budget)


def _sched(c: _Candidate) -> dict[str, int]:
    return {"patch_blocks": c.patch_blocks, "n_patches": c.n_patches}


def _peak(graph: Graph, memory: MemoryConfig, c: _Candidate) -> int:
    plan = patch_plan(graph, memory, c.patch_blocks, c.n_patches, check=False, placement=False, geometry=c.geometry)
    return plan.peak_live_bytes


def _rest_floor(lt: object) -> dict[int, int]:
    """Per boundary pb: the largest layer-plan working set among ops of blocks ≥ pb — those run layer by layer
    after a patch stage of pb blocks with the same tensors, so no patch plan of that boundary can go lower."""
    steps, ws = lt.steps, lt.working_set  # type: ignore[attr-defined]
    top = max((n.block for n in steps), default=0)
    floor: dict[int, int] = {}
    running = 0
    for pb in range(top + 1, 0, -1):
        running = max([running] + [w for n, w in zip(steps, ws) if n.block == pb])
        floor[pb] = running
    return floor
