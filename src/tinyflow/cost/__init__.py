"""Cost models' shared math: analytic MACs/params/flash, MicroNets latency/energy, fast arch costing."""

from tinyflow.cost.analytic import analytic_report, per_layer_costs
from tinyflow.cost.fast import ArchCost, arch_cost
from tinyflow.cost.flash import model_flash_bytes
from tinyflow.cost.latency import energy_mj, latency_ms, latency_slope

__all__ = [
    "ArchCost",
    "analytic_report",
    "arch_cost",
    "energy_mj",
    "latency_ms",
    "latency_slope",
    "model_flash_bytes",
    "per_layer_costs",
]
