"""Memory engine: tensor lifetimes, peak live bytes, arena placement and execution plans (DESIGN §3)."""

from tinyflow.memory.arena import ALGORITHMS, PlanError, check_no_overlap, place
from tinyflow.memory.layer_plan import layer_plan
from tinyflow.memory.lifetimes import Lifetimes, compute_lifetimes, peak_live_bytes
from tinyflow.memory.plan import ExecutionPlan, Step, TensorAlloc

__all__ = [
    "ALGORITHMS",
    "ExecutionPlan",
    "Lifetimes",
    "PlanError",
    "Step",
    "TensorAlloc",
    "check_no_overlap",
    "compute_lifetimes",
    "layer_plan",
    "peak_live_bytes",
    "place",
]
