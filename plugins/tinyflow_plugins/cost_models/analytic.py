"""The `analytic` cost model: MACs, params, flash (DESIGN §3) and a per-layer table; no latency."""

from __future__ import annotations

from dataclasses import fields

from tinyflow.contracts import CostReport, Device, MemoryConfig
from tinyflow.cost.analytic import analytic_report
from tinyflow.ir.graph import Graph


class AnalyticCostModel:
    """Counts MACs, params and int8 flash (weights + 4 B bias + 4 B scale per output channel + runtime)."""

    name = "analytic"

    def __init__(self, memory: dict | None = None):
        known = {f.name for f in fields(MemoryConfig)}
        self.memory = MemoryConfig(**{k: v for k, v in (memory or {}).items() if k in known})

    def estimate(self, graph: Graph, device: Device) -> CostReport:
        return analytic_report(graph, device, self.memory)
