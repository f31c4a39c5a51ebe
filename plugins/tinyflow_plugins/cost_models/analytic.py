"""The `analytic` cost model: MACs, params, flash (docs/design.md §6, §8), a per-layer table; no latency."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

from tinyflow.contracts import CostReport, Device, MemoryConfig
from tinyflow.cost.analytic import analytic_report
from tinyflow.ir.graph import Graph

if TYPE_CHECKING:
    from tinyflow.memory.plan import ExecutionPlan


class AnalyticCostModel:
    """Counts MACs, params and int8 flash of the model alone (weights + 4 B bias + 4 B scale per output channel)."""

    name = "analytic"

    def __init__(self, memory: dict | None = None):
        known = {f.name for f in fields(MemoryConfig)}
        self.memory = MemoryConfig(**{k: v for k, v in (memory or {}).items() if k in known})

    def estimate(self, graph: Graph, device: Device, plan: ExecutionPlan | None = None) -> CostReport:
        """Costs of `graph`; with the `plan` that runs it, MACs are the plan's (recomputation included)."""
        return analytic_report(graph, device, self.memory, plan)
