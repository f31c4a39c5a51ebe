"""The `micronets` cost model: the analytic counts plus latency and energy linear in ops (MicroNets).

latency_ms = intercept + slope · ops / 1e6, ops = 2·MACs, the slope set in the device (`latency_ms_per_mop`), the
device's core fit of tinyflow's own firmware (`latency_fit`, measured on the emulator) or derived from the clock and
`device.macs_per_cycle` (tinyflow.cost.latency); energy_mj =
`device.energy_mj_per_mop` · ops / 1e6, or power × latency; None when the device has neither figure.
With a plan, the MACs (and so latency and energy) are the plan's: a patch schedule's recomputation costs time.
Fit a device's coefficients from measurements with `python -m tinyflow.cost.fit rows.csv` (a core's from the
emulator: `benchmarks/bench_firmware.py --core <core>`, then `python -m tinyflow.cost.fit <csv> --core <core> --write`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyflow.contracts import CostReport, Device
from tinyflow.cost.latency import energy_mj, latency_intercept, latency_ms
from tinyflow.ir.graph import Graph
from tinyflow_plugins.cost_models.analytic import AnalyticCostModel

if TYPE_CHECKING:
    from tinyflow.memory.plan import ExecutionPlan


class MicroNetsCostModel(AnalyticCostModel):
    name = "micronets"

    def estimate(self, graph: Graph, device: Device, plan: ExecutionPlan | None = None) -> CostReport:
        report = super().estimate(graph, device, plan)
        report.latency_ms = latency_ms(report.macs, device)
        has_energy = device.energy_mj_per_mop > 0 or device.power_mw > 0
        report.energy_mj = energy_mj(report.macs, device) if has_energy else None
        for row in report.per_layer:
            row["latency_ms"] = latency_ms(row["macs"], device) - latency_intercept(device)
        return report
