"""Memory engine: conventions, tensor lifetimes, peak live bytes, arena placement and the three planners.

`config` (MemoryConfig) → `lifetimes` (who is alive when) → `arena` (where) → `builder` (the one ExecutionPlan
builder) used by `layer_plan`, `patch_plan` and `rnnpool_plan` (import those two from their modules).
"""

from tinyflow.memory.arena import ALGORITHMS, PlanError, check_no_overlap, place
from tinyflow.memory.builder import build_plan
from tinyflow.memory.config import ARENA_ALGORITHMS, MemoryConfig
from tinyflow.memory.layer_plan import layer_plan
from tinyflow.memory.lifetimes import Lifetimes, compute_lifetimes, peak_live_bytes
from tinyflow.memory.plan import ExecutionPlan, Step, TensorAlloc

__all__ = [
    "ALGORITHMS",
    "ARENA_ALGORITHMS",
    "ExecutionPlan",
    "Lifetimes",
    "MemoryConfig",
    "PlanError",
    "Step",
    "TensorAlloc",
    "build_plan",
    "check_no_overlap",
    "compute_lifetimes",
    "layer_plan",
    "peak_live_bytes",
    "place",
]
