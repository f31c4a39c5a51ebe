"""The `layer` scheduler: every op over its whole tensor, one after another (TF Lite Micro, TinyEngine)."""

from __future__ import annotations

from tinyflow.arch.genome import Arch
from tinyflow.contracts import MemoryConfig, SchedulerBase
from tinyflow.cost.fast import ArchCost, arch_cost
from tinyflow.ir.graph import Graph
from tinyflow.memory.layer_plan import layer_plan
from tinyflow.memory.plan import ExecutionPlan


class LayerScheduler(SchedulerBase):
    """Plans a graph layer by layer: lifetimes (docs/design.md §6), an arena placement, checked for overlaps."""

    name = "layer"

    def __init__(self, check: bool = True):
        self.check = check

    def plan(self, graph: Graph, memory: MemoryConfig) -> ExecutionPlan:
        return layer_plan(graph, memory, check=self.check)

    def arch_costs(self, arch: Arch, memory: MemoryConfig) -> ArchCost:
        """The engine's closed form of the layer plan (thousands of archs per second; `tinyflow.cost.fast`)."""
        return arch_cost(arch, memory)
