"""The `patch` scheduler (MCUNetV2 patch-based inference): options, and the policy that picks a plan for a budget.

The planner is `tinyflow.memory.patch_plan.patch_plan` (the first `patch_blocks` blocks run on an
`n_patches × n_patches` grid, the rest layer by layer); the choice among layer and patch plans is
`tinyflow.memory.patch_policy.PatchPolicy` (docs/design.md §7). Bound to a device (`for_budget`, which the
space, search, schedule and analyze stages call) the scheduler returns the cheapest plan that fits: the layer
plan when it fits, else the fitting patch plan with the fewest extra MACs (the lowest estimated latency when
the budget carries a cost model), else the lowest peak, marked "does not fit by N KiB". Options fixed by the
user narrow the candidates; both fixed, that plan is used whenever it fits. Unbound (a plan on its own), both
options fixed give exactly that plan and `auto` gives the lowest peak.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tinyflow.arch.genome import Arch
from tinyflow.contracts import ScheduleBudget, SchedulerBase
from tinyflow.cost.fast import ArchCost, arch_cost
from tinyflow.errors import ConfigError
from tinyflow.ir.graph import Graph
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.patch_plan import patch_plan
from tinyflow.memory.patch_policy import KIB, PatchPolicy, PolicyOptions, schedule_label
from tinyflow.memory.plan import ExecutionPlan

AUTO = "auto"
DEFAULT_MAX_EXTRA_MACS = 0.5  # MCUNetV2 keeps the overhead of its searched schedules far below this


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


def _max_extra(value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = -1.0
    if v < 0:
        raise ConfigError(
            f"scheduler.max_extra_macs = {value!r}: give a fraction ≥ 0 of the network's MACs (e.g. 0.5 for at most "
            "+50% recomputation), or null for no limit"
        )
    return v


class PatchScheduler(SchedulerBase):
    """`scheduler=patch`: MCUNetV2 patch-based inference, the schedule chosen by budget and cost.

    `n_patches_choices`: the grids `n_patches: auto` tries. `max_extra_macs`: the most recomputation (a fraction of
    the network's MACs) a chosen patch plan may add; null = no limit.
    """

    name = "patch"

    def __init__(
        self,
        n_patches: int | str = AUTO,
        patch_blocks: int | str = AUTO,
        n_patches_choices: Sequence[int] = (2, 3, 4, 5, 6, 7, 8),
        max_extra_macs: float | None = DEFAULT_MAX_EXTRA_MACS,
        budget: ScheduleBudget | None = None,
    ):
        self.n_patches = _parse(n_patches, "n_patches")
        self.patch_blocks = _parse(patch_blocks, "patch_blocks")
        self.n_patches_choices = tuple(int(n) for n in n_patches_choices)
        if not self.n_patches_choices or min(self.n_patches_choices) < 1:
            raise ConfigError(f"scheduler.n_patches_choices = {list(n_patches_choices)}: give positive integers")
        self.max_extra_macs = _max_extra(max_extra_macs)
        self.budget = budget

    # ---- the Protocol -----------------------------------------------------------------------------------
    def for_budget(self, budget: ScheduleBudget) -> PatchScheduler:
        bound = PatchScheduler.__new__(PatchScheduler)
        bound.__dict__.update(self.__dict__)
        bound.budget = budget
        return bound

    def arch_costs(self, arch: Arch, memory: MemoryConfig) -> ArchCost | None:
        """The layer plan's closed form when the policy would take the layer plan (its peak fits), else None."""
        b = self.budget
        if b is None or b.metric != "peak_live" or b.sram_bytes is None:
            return None
        cost = arch_cost(arch, memory)
        return cost if cost.peak_live_bytes <= b.sram_bytes else None

    def plan(self, graph: Graph, memory: MemoryConfig) -> ExecutionPlan:
        fixed = self.n_patches != AUTO and self.patch_blocks != AUTO
        if self.budget is None and fixed:
            plan = patch_plan(graph, memory, int(self.patch_blocks), int(self.n_patches))
            return _configured(plan, "as configured (no budget to choose for)")
        policy = self._policy()
        if fixed:
            return self._fixed(graph, memory, policy)
        return policy.choose(graph, memory, self._budget_bytes())

    # ---- helpers -----------------------------------------------------------------------------------------
    def _budget_bytes(self) -> int | None:
        return None if self.budget is None else self.budget.sram_bytes

    def _policy(self, narrow: bool = True) -> PatchPolicy:
        b = self.budget
        options = PolicyOptions(
            patch_blocks=int(self.patch_blocks) if narrow and self.patch_blocks != AUTO else None,
            n_patches=int(self.n_patches) if narrow and self.n_patches != AUTO else None,
            grids=self.n_patches_choices,
            max_extra_macs=self.max_extra_macs,
            metric="arena" if b is None else b.metric,
            strict=bool(b is not None and b.strict),
            overhead=None if b is None else b.overhead,
        )
        cost = None
        if b is not None and b.cost_model is not None and b.device is not None:
            model, device = b.cost_model, b.device

            def cost(graph: Graph, plan: ExecutionPlan) -> float:
                report = model.estimate(graph, device, plan)
                return float(report.latency_ms if report.latency_ms is not None else report.macs)

        return PatchPolicy(options, cost)

    def _fixed(self, graph: Graph, memory: MemoryConfig, policy: PatchPolicy) -> ExecutionPlan:
        """Both options fixed and a budget: that plan (clamped to the network) when it fits, else the policy's."""
        budget = self._budget_bytes()
        cands = policy.candidates(graph)  # one candidate, clamped (or an error when strict)
        if not cands:  # lenient, and the configured boundary cannot end a patch stage in this network
            chosen = self._policy(narrow=False).choose(graph, memory, budget)
            chosen.extra["schedule_reason"] = (
                f"scheduler.patch_blocks = {self.patch_blocks} cannot end a patch stage in '{graph.name}'; "
                + chosen.extra["schedule_reason"]
            )
            return chosen
        cand = cands[0]
        plan = patch_plan(graph, memory, cand.patch_blocks, cand.n_patches, geometry=cand.geometry)
        used = plan.arena_bytes if policy.options.metric == "arena" else plan.peak_live_bytes
        label = schedule_label({"n_patches": cand.n_patches, "patch_blocks": cand.patch_blocks})
        if budget is None or used <= budget:
            where = "" if budget is None else f": fits at {used / KIB:.1f} KiB ≤ budget {budget / KIB:.1f} KiB"
            out = _configured(plan, f"{label} as configured{where}")
            if budget is not None:
                out.extra.update(schedule_budget_bytes=budget, fits_budget=True, over_budget_bytes=0)
            return out
        chosen = self._policy(narrow=False).choose(graph, memory, budget)
        chosen.extra["schedule_reason"] = (
            f"the configured {label} needs {used / KIB:.1f} KiB > budget {budget / KIB:.1f} KiB; "
            + chosen.extra["schedule_reason"]
        )
        return chosen


def _configured(plan: ExecutionPlan, why: str) -> ExecutionPlan:
    sched = {"patch_blocks": int(plan.extra["patch_blocks"]), "n_patches": int(plan.extra["n_patches"])}
    plan.extra.update(schedule=sched, schedule_used=schedule_label(sched), schedule_reason=why)
    return plan


__all__ = ["PatchScheduler"]
