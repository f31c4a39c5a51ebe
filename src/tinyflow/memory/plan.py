"""`ExecutionPlan`: what every scheduler returns — ordered steps, placed tensors, peak, arena, MACs, profile.

Plain dataclasses (no torch); `to_dict()` gives JSON-ready data. Scheduler-specific figures go in `extra`
(the patch scheduler: n_patches, patch_blocks, input_patch_hw, patch_stage_macs, patch_stage_macs_layerwise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TensorAlloc:
    """One tensor of the plan: `size` bytes at `offset` in the arena, alive over steps [first_step, last_step].

    `buffer` names the storage it lives in (several tensors share one buffer when an op runs in place or is a
    view); `alias_of` is the tensor whose storage it reuses and `alias_kind` how (`inplace` or `view`).
    """

    name: str
    size: int
    first_step: int
    last_step: int
    offset: int = -1
    buffer: str = ""
    alias_of: str | None = None
    alias_kind: str | None = None
    is_input: bool = False

    @property
    def end(self) -> int:
        return self.offset + self.size


#: what a plan step is, declared by the planner that makes it (codegen and executors read it, never infer it)
STEP_KINDS = ("layer", "patch", "rnnpool")


@dataclass
class Step:
    """One op run by the plan (`patch` is None for a whole-tensor op, else (row, col) of the patch grid).

    `kind` says how the step runs: `layer` (the whole tensor), `patch` (one output region of an MCUNetV2 patch
    stage, `extra["region"]`), `rnnpool` (one RNNPool patch: stem and pooling on an input window)."""

    index: int
    node: str
    op: str
    block: int
    inputs: list[str]
    outputs: list[str]
    macs: int
    working_set_bytes: int
    patch: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = "layer"

    def __post_init__(self) -> None:
        if self.kind not in STEP_KINDS:
            raise ValueError(f"plan step {self.index} ({self.node}): kind '{self.kind}' is not one of {STEP_KINDS}")


@dataclass
class ExecutionPlan:
    """An executable, placed schedule of one network under one memory convention."""

    scheduler: str
    graph: str
    memory: dict[str, Any]
    steps: list[Step]
    tensors: list[TensorAlloc]
    peak_live_bytes: int
    arena_bytes: int
    macs: int
    params: int
    peak_layer: str
    per_layer: list[dict[str, Any]]  # memory profile rows: name, op, block, output_shape, working_set_bytes, macs
    arena_algorithm: str = "first_fit_decreasing"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fragmentation(self) -> float:
        """arena / peak - 1: the placement's overhead above the lower bound."""
        return self.arena_bytes / self.peak_live_bytes - 1.0 if self.peak_live_bytes else 0.0

    def tensor(self, name: str) -> TensorAlloc:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def summary(self) -> dict[str, Any]:
        """The headline figures (what the pipeline stores in its context and logs)."""
        out: dict[str, Any] = {
            "scheduler": self.scheduler,
            "graph": self.graph,
            "peak_live_bytes": self.peak_live_bytes,
            "arena_bytes": self.arena_bytes,
            "arena_algorithm": self.arena_algorithm,
            "macs": self.macs,
            "params": self.params,
            "peak_layer": self.peak_layer,
            "memory": dict(self.memory),
        }
        out.update(self.extra)
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for s in d["steps"]:
            if s["patch"] is not None:
                s["patch"] = list(s["patch"])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutionPlan:
        """The inverse of `to_dict` (what `plan.json` and the Deployment file hold)."""
        data = dict(data)
        steps = [Step(**{**s, "patch": tuple(s["patch"]) if s.get("patch") else None}) for s in data.pop("steps")]
        tensors = [TensorAlloc(**t) for t in data.pop("tensors")]
        return cls(steps=steps, tensors=tensors, **data)
