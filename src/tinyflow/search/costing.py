"""Cost functions for search, built on the memory engine (never its own memory accounting).

A candidate arch is costed as the network the scheduler deploys for it: `scheduler.network(network_of(arch))`
(`network_of` is `DeployedNetwork.plain` unless a supernet says otherwise, e.g. an RNNPool stem), planned by the
scheduler. MACs are the plan's (they include a patch plan's recomputation); `Costs.network_macs` keeps the
network's own. A scheduler that offers a closed-form path (`Scheduler.arch_costs`, the layer scheduler: the same
numbers as its plan, thousands of archs per second) is used for an arch's plain network with `metric="peak_live"`.
Peak SRAM is the plan's `peak_live_bytes` (the lower bound, `metric="peak_live"`: fast) or its placed
`arena_bytes` (`metric="arena"`: every candidate planned, what the device must really hold). Either way the
search stage verifies its final choice against the real arena layout (`verify_plan`).
`Costs.peak_sram` adds the firmware's own SRAM beside the arena (`tinyflow.memory.runtime_overhead`: kernel
scratch, output buffer, runtime, stack on the device's core), so the SRAM budget is compared with what the firmware
needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tinyflow.arch.genome import Arch
from tinyflow.contracts import CostModel, Device, MemoryConfig, ScheduleBudget, Scheduler
from tinyflow.cost import model_flash_bytes
from tinyflow.errors import ConfigError
from tinyflow.memory import runtime_overhead
from tinyflow.network import DeployedNetwork
from tinyflow.search.problem import Costs

log = logging.getLogger(__name__)

METRICS = ("peak_live", "arena")


@dataclass
class SchedulerCosts:
    """Costs of (arch, scheduler options) from a scheduler's real plan.

    `make_scheduler(options)` builds the scheduler plugin with those options (joint search) or ignores them;
    with a `budget` every scheduler is bound to it (`Scheduler.for_budget`: the patch scheduler's policy picks the
    cheapest plan that fits, and `Costs.schedule` says which).
    `network_of(arch)` is the network a candidate arch stands for (None: `DeployedNetwork.plain`).
    `cost_model` (a cost model plugin) adds latency and energy on `device` (needed only for those budgets); a
    patch plan's recomputed MACs scale them (the cost models are linear in MACs, MicroNets).
    `metric`: `peak_live` or `arena` (see the module docstring).
    """

    memory: MemoryConfig
    make_scheduler: Callable[[dict[str, int]], Scheduler]
    device: Device | None = None
    cost_model: CostModel | None = None
    metric: str = "peak_live"
    network_of: Callable[[Arch], DeployedNetwork] | None = None
    budget: ScheduleBudget | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"strategy.memory_metric must be 'peak_live' or 'arena', got '{self.metric}'.")
        self._schedulers: dict[tuple[tuple[str, int], ...], Scheduler] = {}

    def scheduler(self, options: dict[str, int] | None = None) -> Scheduler:
        key = tuple(sorted((options or {}).items()))
        if key not in self._schedulers:
            scheduler = self.make_scheduler(dict(key))
            self._schedulers[key] = scheduler if self.budget is None else scheduler.for_budget(self.budget)
        return self._schedulers[key]

    def search_options(self) -> dict[str, list[int]]:
        """The options (and their choices) the configured scheduler lets a joint search vary."""
        return dict(self.scheduler().search_options())

    def joint_choices(self, joint: bool) -> dict[str, list[int]]:
        """`search_options()` when `joint`, else `{}`; a clear error when a joint search has nothing to vary."""
        if not joint:
            return {}
        options = self.search_options()
        if not options:
            log.info(
                "search: strategy.joint=true, and scheduler=%s offers no free options: its policy chooses each "
                "candidate's schedule (docs/design.md §7), so the search is joint through it",
                self.scheduler().name,
            )
        return options

    def network(self, arch: Arch, options: dict[str, int] | None = None) -> DeployedNetwork:
        """The network the scheduler (with `options`) deploys for `arch`."""
        base = DeployedNetwork.plain(arch) if self.network_of is None else self.network_of(arch)
        return self.scheduler(options).network(base)

    def plan(self, arch: Arch, options: dict[str, int] | None = None) -> Any:
        """The scheduler's full plan (arena placed) of the network it deploys for `arch`."""
        return self.scheduler(options).plan(self.network(arch, options).graph(), self.memory)

    def overhead(self, graph: Any, plan: Any = None) -> int:
        """The firmware's SRAM beside the plan on the device's core (0 without a device)."""
        if self.device is None:
            return 0
        return runtime_overhead.predict(graph, plan, self.device.core).total

    def _fast(self, arch: Arch, scheduler: Scheduler) -> Costs | None:
        """The scheduler's closed form, when it has one and the network is `arch`'s plain one."""
        if self.metric != "peak_live":
            return None
        custom = self.network_of is not None and self.network_of != DeployedNetwork.plain
        if custom and self.network_of(arch) != DeployedNetwork.plain(arch):
            return None
        c = scheduler.arch_costs(arch, self.memory)
        if c is None:
            return None
        extra = (
            self.overhead(self.network(arch).graph()) if self.device is not None else 0
        )  # whole maps: the layer plan
        peak = int(c.peak_live_bytes) + extra
        return Costs(peak_sram=peak, flash=int(c.flash_bytes), macs=int(c.macs), network_macs=c.macs)

    def __call__(self, arch: Arch, options: dict[str, int] | None = None) -> Costs:
        scheduler = self.scheduler(options)
        c = self._fast(arch, scheduler)
        graph = None
        if c is None:
            graph = self.network(arch, options).graph()
            plan = scheduler.plan(graph, self.memory)
            peak = plan.arena_bytes if self.metric == "arena" else plan.peak_live_bytes
            c = Costs(
                peak_sram=int(peak) + self.overhead(graph, plan),
                flash=int(model_flash_bytes(graph)),
                macs=int(plan.macs),
                network_macs=int(graph.macs()),
                schedule=tuple(sorted(plan.extra.get("schedule", {}).items())),
            )
        if self.cost_model is not None and self.device is not None:
            if graph is None:
                graph = self.network(arch, options).graph()
            report = self.cost_model.estimate(graph, self.device)
            scale = c.macs / report.macs if report.macs else 1.0
            lat = None if report.latency_ms is None else report.latency_ms * scale
            energy = None if report.energy_mj is None else report.energy_mj * scale
            c = Costs(c.peak_sram, c.flash, c.macs, lat, energy, network_macs=c.network_macs, schedule=c.schedule)
        return c


def verify_plan(plan: Any, device: Device, graph: Any = None) -> dict[str, Any]:
    """What the engine's real plan says about fitting: arena + the firmware's overhead on the device's core (with
    the plan's `graph`; without it the arena alone) against the SRAM budget."""
    overhead = runtime_overhead.predict(graph, plan, device.core) if graph is not None else None
    extra = overhead.total if overhead is not None else 0
    return {
        "plan_peak_live_bytes": int(plan.peak_live_bytes),
        "plan_arena_bytes": int(plan.arena_bytes),
        **({"sram_overhead_bytes": extra, "sram_overhead": overhead.to_dict()} if overhead is not None else {}),
        "sram_total_bytes": int(plan.arena_bytes) + extra,
        "sram_budget_bytes": device.sram_budget_bytes,
        "arena_fits": int(plan.arena_bytes) + extra <= device.sram_budget_bytes,
        "schedule_used": str(plan.extra.get("schedule_used", plan.scheduler)),
        "schedule_reason": str(plan.extra.get("schedule_reason", f"scheduler={plan.scheduler} plans it one way")),
        **({"schedule": dict(plan.extra["schedule"])} if "schedule" in plan.extra else {}),
    }


def fixed_overhead(core: str) -> int:
    """The part of the firmware's overhead that does not depend on the network: runtime + the stack base + the
    largest layer frame (a bound on the stack), on `core` at the default options."""
    row, _ = runtime_overhead.constants(core)
    frames = [int(v) for v in row["frames"].values()]
    return int(row["runtime"]) + int(row["stack_base"]) + max(frames, default=0)
