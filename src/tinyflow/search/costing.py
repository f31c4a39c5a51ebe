"""Cost functions for search, built on the memory engine (never its own memory accounting).

- `layer` scheduler: the engine's fast closed-form costing (`tinyflow.cost.arch_cost`), the same numbers as
  the IR + layer plan, thousands of archs per second.
- any other scheduler (e.g. `patch`, or joint search's per-candidate patch options): the IR and the
  scheduler's own plan; MACs then include the plan's recomputation (patch overlap). A scheduler that rewrites
  the network (`rnnpool`) plans, and counts the flash of, the rewritten network (its `network_graph`).
Peak SRAM is the plan's `peak_live_bytes` (the lower bound, `metric="peak_live"`: fast) or its placed
`arena_bytes` (`metric="arena"`: every candidate planned, what the device must really hold). Either way the
search stage verifies its final choice against the real arena layout (`verify_plan`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tinyflow.arch.genome import Arch
from tinyflow.contracts import Device, MemoryConfig
from tinyflow.cost import arch_cost, model_flash_bytes
from tinyflow.search.problem import Costs


def fast_layer_costs(memory: MemoryConfig) -> Callable[[Arch], Costs]:
    """Costs of an arch run layer by layer, from the engine's fast path."""

    def cost(arch: Arch) -> Costs:
        c = arch_cost(arch, memory)
        return Costs(peak_sram=c.peak_live_bytes, flash=c.flash_bytes, macs=c.macs)

    return cost


@dataclass
class SchedulerCosts:
    """Costs of (arch, scheduler options) from a scheduler's real plan.

    `make_scheduler(options)` builds the scheduler plugin with those options (joint search) or ignores them.
    With `fast_layer=True` and no options, the fast layer path is used instead of a plan.
    `cost_model` (a cost model plugin) adds latency and energy on `device` (needed only for those budgets); a
    patch plan's recomputed MACs scale them (the cost models are linear in MACs, MicroNets).
    `metric`: `peak_live` or `arena` (see the module docstring).
    """

    memory: MemoryConfig
    make_scheduler: Callable[[dict[str, int]], Any] | None = None
    fast_layer: bool = False
    device: Device | None = None
    cost_model: Any = None
    metric: str = "peak_live"

    def __post_init__(self) -> None:
        if self.metric not in ("peak_live", "arena"):
            from tinyflow.errors import ConfigError

            raise ConfigError(f"strategy.memory_metric must be 'peak_live' or 'arena', got '{self.metric}'.")
        self._schedulers: dict[tuple[tuple[str, int], ...], Any] = {}
        self._fast = fast_layer_costs(self.memory)

    def scheduler(self, options: dict[str, int]) -> Any:
        key = tuple(sorted(options.items()))
        if key not in self._schedulers:
            assert self.make_scheduler is not None
            self._schedulers[key] = self.make_scheduler(dict(options))
        return self._schedulers[key]

    def plan(self, arch: Arch, options: dict[str, int]) -> Any:
        from tinyflow.ir import from_arch

        return self.scheduler(options).plan(from_arch(arch), self.memory)

    def __call__(self, arch: Arch, options: dict[str, int] | None = None) -> Costs:
        options = options or {}
        graph = None
        if self.fast_layer and not options and self.metric == "peak_live":
            c = self._fast(arch)
        else:
            from tinyflow.ir import from_arch

            graph = from_arch(arch)
            scheduler = self.scheduler(options)
            plan = scheduler.plan(graph, self.memory)
            peak = plan.arena_bytes if self.metric == "arena" else plan.peak_live_bytes
            rewrite = getattr(scheduler, "network_graph", None)  # a scheduler that changes the network (rnnpool)
            flash = model_flash_bytes(rewrite(graph) if callable(rewrite) else graph)
            c = Costs(peak_sram=int(peak), flash=int(flash), macs=int(plan.macs))
        if self.cost_model is not None and self.device is not None:
            from tinyflow.ir import from_arch

            report = self.cost_model.estimate(graph if graph is not None else from_arch(arch), self.device)
            scale = c.macs / report.macs if report.macs else 1.0
            lat = None if report.latency_ms is None else report.latency_ms * scale
            energy = None if report.energy_mj is None else report.energy_mj * scale
            c = Costs(c.peak_sram, c.flash, c.macs, lat, energy)
        return c


def verify_plan(plan: Any, device: Device) -> dict[str, Any]:
    """What the engine's real plan says about fitting: arena and peak against the SRAM budget."""
    return {
        "plan_peak_live_bytes": int(plan.peak_live_bytes),
        "plan_arena_bytes": int(plan.arena_bytes),
        "sram_budget_bytes": device.sram_budget_bytes,
        "arena_fits": int(plan.arena_bytes) <= device.sram_budget_bytes,
    }
