"""Plugin contracts: one `typing.Protocol` per plugin kind, and the dataclasses passed between them.

Core code depends on these, never on a plugin module. A plugin is built by `hydra.utils.instantiate` from its
config group option and checked with `tinyflow.plugins.instantiate_plugin(group, cfg)` against the Protocol
named in `PROTOCOLS`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tinyflow.arch.genome import Arch

if TYPE_CHECKING:  # keep core importable without torch
    from tinyflow.ir.graph import Graph
    from tinyflow.search.problem import SearchProblem


# ---------------------------------------------------------------- dataclasses passed between plugins
@dataclass(frozen=True)
class Device:
    """A microcontroller target. Sizes in kB as datasheets give them (1 kB = 1024 B here, as MCU docs do)."""

    name: str
    sram_kb: float
    flash_kb: float
    core: str
    clock_mhz: float
    sram_reserve_kb: float = 0.0  # kept free for the runtime, stack and I/O buffers
    flash_reserve_kb: float = 0.0  # runtime code (e.g. TF Lite Micro ~37 KB, MicroNets)
    macs_per_cycle: float = 0.0  # documented/derived throughput of int8 conv kernels, for cost models
    latency_ms_per_mop: float = 0.0  # MicroNets slope: ms per 1e6 ops (ops = 2·MACs); 0 = derive from clock
    latency_intercept_ms: float = 0.0
    energy_mj_per_mop: float = 0.0
    power_mw: float = 0.0
    coefficient_source: str = ""

    @property
    def sram_bytes(self) -> int:
        return int(self.sram_kb * 1024)

    @property
    def flash_bytes(self) -> int:
        return int(self.flash_kb * 1024)

    @property
    def sram_budget_bytes(self) -> int:
        """SRAM available to the activation arena."""
        return int((self.sram_kb - self.sram_reserve_kb) * 1024)

    @property
    def flash_budget_bytes(self) -> int:
        """Flash available to the model's weights."""
        return int((self.flash_kb - self.flash_reserve_kb) * 1024)


@dataclass(frozen=True)
class MemoryConfig:
    """Memory conventions (DESIGN §3). Every memory figure records the convention that produced it."""

    dtype_bytes: int = 1
    inplace_depthwise: bool = True
    count_input: bool = True
    rule: str = "liveness"  # or "layer_local"
    arena_algorithm: str = "best"  # see tinyflow.memory.arena


@dataclass
class CostReport:
    """What a cost model says of one network."""

    macs: int
    params: int
    flash_bytes: int
    latency_ms: float | None = None
    energy_mj: float | None = None
    per_layer: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SearchResult:
    """What every search strategy returns."""

    best: Arch
    best_score: float
    pareto: list[dict[str, Any]]  # each: {"arch": Arch, "accuracy": .., "peak_sram": .., "macs": ..}
    history: list[dict[str, Any]]  # per generation/trial: {"step": i, "best_so_far": ..., ...}
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- plugin protocols
@runtime_checkable
class SearchSpace(Protocol):
    """A family of archs with a fixed width multiplier and resolution (TinyNAS stage 1 chooses those)."""

    name: str
    width_mult: float
    resolution: int

    def sample(self, rng: random.Random) -> Arch: ...
    def max_arch(self) -> Arch: ...
    def min_arch(self) -> Arch: ...
    def with_width_resolution(self, width_mult: float, resolution: int) -> SearchSpace: ...
    def encode(self, arch: Arch) -> list[float]: ...


@runtime_checkable
class CostModel(Protocol):
    """Turns a network IR into MACs, params, flash and (optionally) latency/energy on a device."""

    def estimate(self, graph: Graph, device: Device) -> CostReport: ...


@runtime_checkable
class Scheduler(Protocol):
    """Turns a network IR into an execution plan with a real arena layout."""

    name: str

    def plan(self, graph: Graph, memory: MemoryConfig) -> Any: ...  # -> tinyflow.memory.plan.ExecutionPlan


@runtime_checkable
class DataModule(Protocol):
    """Image classification data; resolution follows the arch (elastic resolution)."""

    name: str
    num_classes: int
    in_channels: int

    def set_resolution(self, resolution: int) -> None: ...
    def setup(self, stage: str | None = None) -> None: ...
    def train_dataloader(self) -> Any: ...
    def val_dataloader(self) -> Any: ...
    def test_dataloader(self) -> Any: ...


@runtime_checkable
class Trainer(Protocol):
    """Trains a supernet (`ofa`) or a fixed arch (`standalone`)."""

    name: str

    def fit(self, space: SearchSpace, data: DataModule, workdir: str, tracker: Tracker) -> dict[str, Any]: ...
    def evaluate(self, arch: Arch, split: str = "val") -> float: ...


@runtime_checkable
class Strategy(Protocol):
    """Searches for the best arch under constraints.

    `problem` (tinyflow.search.problem.SearchProblem) carries the space, the genome operators (sample, mutate,
    crossover; with `joint` also the patch scheduler's options), the costs and budgets, and the cached accuracy
    that counts evaluations.
    """

    name: str

    def search(self, problem: SearchProblem, rng: random.Random) -> SearchResult: ...


@runtime_checkable
class Backend(Protocol):
    """Checks, measures and logs the final model's exported files (ONNX + onnxruntime; later C code for Cortex-M).

    `files` names what the `quantize` stage exported (`onnx`: float, `onnx_int8`: QDQ int8). Returns
    `{"metrics": {name: float}, "checks": {name: value}, "files": {name: path}}`; raises a TinyflowError when a
    check fails loudly (e.g. the float file does not compute what the PyTorch model computes).
    """

    name: str

    def deploy(
        self, model: Any, arch: Arch, data: DataModule, workdir: str, tracker: Tracker, files: dict[str, str]
    ) -> dict[str, Any]: ...


@runtime_checkable
class Tracker(Protocol):
    """Experiment tracking: one parent run per job, one child run per stage."""

    def job(self, cfg: Any, tags: dict[str, str]) -> AbstractContextManager[Any]: ...
    def stage(self, name: str) -> AbstractContextManager[Any]: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str, artifact_path: str | None = None) -> None: ...
    def log_figure(self, figure: Any, name: str) -> None: ...
    def log_text(self, text: str, name: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_parent_metrics(self, metrics: dict[str, float]) -> None: ...


# group name -> Protocol checked after instantiation
PROTOCOLS: dict[str, type] = {
    "search_space": SearchSpace,
    "cost_model": CostModel,
    "scheduler": Scheduler,
    "data": DataModule,
    "trainer": Trainer,
    "strategy": Strategy,
    "backend": Backend,
    "tracking": Tracker,
}


def iter_protocol_members(proto: type) -> Iterator[str]:
    """Names a plugin must provide to satisfy `proto` (methods and attributes)."""
    ann = getattr(proto, "__annotations__", {})
    yield from ann
    for name, value in vars(proto).items():
        if callable(value) and not name.startswith("_"):
            yield name
