"""Plugin contracts: one `typing.Protocol` per plugin kind, and the dataclasses passed between them.

Core code depends on these, never on a plugin module, and calls on a plugin only what its Protocol declares
(`SchedulerBase` gives a scheduler the defaults). A plugin is built by `hydra.utils.instantiate` from its config
group option and checked with `tinyflow.plugins.build_plugin(cfg, group)` against the Protocol named in
`PROTOCOLS`; `tinyflow.testing` holds a behaviour suite per kind (docs/design.md §4).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from tinyflow.arch.genome import Arch
from tinyflow.device import Device
from tinyflow.memory.config import MemoryConfig

if TYPE_CHECKING:  # keep core importable without torch
    from tinyflow.cost.fast import ArchCost
    from tinyflow.deployment import Deployment
    from tinyflow.ir.graph import Graph
    from tinyflow.memory.plan import ExecutionPlan
    from tinyflow.network import DeployedNetwork


# ---------------------------------------------------------------- dataclasses passed between plugins
# Device and MemoryConfig live in leaf modules (validated there); re-exported here for plugins


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
    """What every search strategy returns (`tinyflow.search.strategy.finish` builds it from a problem).

    A row (of `pareto`, `evaluated`) is `{"arch": Arch, "schedule": {option: value}, "accuracy", "peak_sram",
    "flash", "macs", "latency_ms", "energy_mj", "feasible"}`.
    """

    best: Arch
    best_score: float
    pareto: list[dict[str, Any]]  # the non-dominated feasible rows
    history: list[dict[str, Any]]  # per generation/trial: {"step": i, "best_so_far": ..., "n_evaluations": ...}
    strategy: str = ""
    n_evaluations: int = 0  # distinct archs whose accuracy was evaluated (the budget strategies are compared at)
    evaluated: list[dict[str, Any]] = field(default_factory=list)  # every feasible evaluated row
    best_schedule: dict[str, int] = field(default_factory=dict)  # scheduler options searched with `best` (joint)
    details: dict[str, Any] = field(default_factory=dict)  # strategy-specific counters (generations, trials, ...)


@dataclass(frozen=True)
class ScheduleBudget:
    """What a scheduler chooses its plan against (`Scheduler.for_budget`; docs/design.md §7).

    `sram_bytes`: the SRAM budget; `metric`: what must fit, the placed `arena` or `peak_live` (a search's lower
    bound); `device` and `cost_model` price candidates (latency) when the scheduler ranks by cost; `strict`: an
    option invalid for this network is an error (analysing one network) instead of clamped with a warning.
    `overhead(graph, plan)`: the firmware's own SRAM beside the arena for a plan; given, `sram_bytes` is the whole
    budget and a scheduler that chooses between plans prices each one's overhead (a patch plan's kernel scratch is
    smaller than the layer plan's); a scheduler with one plan per graph ignores it.
    """

    sram_bytes: int | None
    metric: str = "arena"
    device: Device | None = None
    cost_model: Any = None
    strict: bool = False
    overhead: Any = None  # Callable[[Graph, ExecutionPlan], int] | None


@dataclass
class SearchSettings:
    """Options every `conf/strategy/*.yaml` carries besides the algorithm's own; a strategy's `settings`.

    objective: `supernet` (BN-recalibrated supernet accuracy, cached per arch) or `predictor` (an MLP trained on
    `predictor.n_samples` supernet-measured archs). joint: also search the options the scheduler offers
    (`Scheduler.search_options()`, e.g. the patch scheduler's `n_patches` and `patch_blocks`; MCUNetV2).
    """

    objective: str = "predictor"
    joint: bool = False
    latency_budget_ms: float | None = None
    energy_budget_mj: float | None = None
    predictor: dict[str, Any] = field(default_factory=dict)
    memory_metric: str = "peak_live"  # or "arena": constrain the placed arena (every candidate planned; slower)
    torch_threads: int | None = 1  # threads while subnets are evaluated; None = torch's default
    val_images: int | None = None  # each subnet scored on the val split's first this many images; None = all
    val_images_at_resolution: int | None = None  # val_images is the budget at this resolution (fewer at a larger one)
    progress: bool = True

    def __post_init__(self) -> None:
        from tinyflow.errors import ConfigError

        if self.objective not in ("supernet", "predictor"):
            raise ConfigError(f"strategy.objective must be 'supernet' or 'predictor', got '{self.objective}'.")
        if self.memory_metric not in ("peak_live", "arena"):
            raise ConfigError(f"strategy.memory_metric must be 'peak_live' or 'arena', got '{self.memory_metric}'.")
        at = self.val_images_at_resolution
        if at is not None and (isinstance(at, bool) or int(at) < 1):
            raise ConfigError(f"strategy.val_images_at_resolution must be a resolution >= 1 or null, got {at!r}.")
        if self.val_images is not None and int(self.val_images) < 1:
            raise ConfigError(f"strategy.val_images must be a number of images >= 1 or null, got {self.val_images}.")
        for name in ("latency_budget_ms", "energy_budget_mj"):
            v = getattr(self, name)
            if v is not None and float(v) <= 0:
                raise ConfigError(f"strategy.{name} must be positive or null, got {v}.")


# ---------------------------------------------------------------- plugin protocols
@runtime_checkable
class SearchSpace(Protocol):
    """A family of archs with a fixed width multiplier and resolution (TinyNAS stage 1 chooses those).

    A genome is `{"depths": [...], "kernels": [...], "expands": [...]}` (empty lists for a one-arch space);
    `fixed_stages` pins the first N elastic stages at their largest choices (0: none pinned).
    """

    name: str
    width_mult: float
    resolution: int
    fixed_stages: int

    def sample(self, rng: random.Random) -> Arch: ...
    def sample_genome(self, rng: random.Random) -> dict[str, list[int]]: ...
    def build(self, depths: Sequence[int], kernels: Sequence[int], expands: Sequence[int]) -> Arch: ...
    def max_arch(self) -> Arch: ...
    def min_arch(self) -> Arch: ...
    def with_width_resolution(self, width_mult: float, resolution: int) -> SearchSpace: ...
    def encode(self, arch: Arch) -> list[float]: ...
    def bind(self, data: DataModule) -> SearchSpace: ...  # the same space for the data's channels and classes


@runtime_checkable
class CostModel(Protocol):
    """Turns a network IR into MACs, params, flash (the model alone) and (optionally) latency/energy on a device.

    With the `plan` that runs the graph, MACs (and what follows from them) are the plan's: a schedule that
    recomputes (patch-based inference) does more work than the graph's own count.
    """

    name: str

    def estimate(self, graph: Graph, device: Device, plan: ExecutionPlan | None = None) -> CostReport: ...


@runtime_checkable
class Scheduler(Protocol):
    """Turns a network IR into an execution plan with a real arena layout.

    `network(net)` is the network this scheduler deploys for `net` (`tinyflow.network.DeployedNetwork`): `net`
    itself for a scheduler that only orders the ops (`SchedulerBase` gives that default), a rewritten one for a
    scheduler that changes the network (`rnnpool`). Plan the graph of the network it returns.
    """

    name: str

    def network(self, net: DeployedNetwork) -> DeployedNetwork: ...
    def plan(self, graph: Graph, memory: MemoryConfig) -> ExecutionPlan: ...
    def search_options(self) -> dict[str, list[int]]: ...
    def arch_costs(self, arch: Arch, memory: MemoryConfig) -> ArchCost | None: ...
    def for_budget(self, budget: ScheduleBudget) -> Scheduler: ...


class SchedulerBase:
    """Defaults for a scheduler plugin: it deploys the network it is given, unchanged; a joint search varies none
    of its options; it has no closed-form cost path (every arch is planned)."""

    def network(self, net: DeployedNetwork) -> DeployedNetwork:
        return net

    def search_options(self) -> dict[str, list[int]]:
        """Options a joint search may vary with the arch, each with its choices (`{}`: none)."""
        return {}

    def arch_costs(self, arch: Arch, memory: MemoryConfig) -> ArchCost | None:
        """Closed-form costs of `arch`'s plain network under this scheduler, equal to its plan's peak live bytes,
        flash and MACs (`tinyflow.cost.ArchCost`), or None when the arch must be planned."""
        return None

    def for_budget(self, budget: ScheduleBudget) -> SchedulerBase:
        """This scheduler choosing its plans for `budget` (a scheduler with a policy, `patch`, picks the cheapest
        plan that fits); the default plans as it always does."""
        return self


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
    def loader(self, split: str, train: bool = False) -> Any: ...  # split: train | val | test
    def calibration_batch(self, n: int = 64, split: str = "train") -> Any: ...  # n un-augmented images (N×C×H×W)


@dataclass
class TrainResult:
    """What a trainer's `fit` returns; stages decide by `kind`, never by the trainer's name.

    `kind="supernet"`: `checkpoint` is a supernet checkpoint (`tinyflow.supernet.Supernet.load` reads it).
    `kind="model"`: `checkpoint` is the `model.pt` of one network and `network` its description
    (`tinyflow.network.DeployedNetwork.to_dict()`). `metrics` are the trainer's final figures (e.g.
    `val_acc_largest` of a supernet, `val_accuracy` of a model); `cache_hit` is set when the train cache reused an
    earlier training.
    """

    kind: Literal["supernet", "model"]
    checkpoint: str
    metrics: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    network: dict[str, Any] | None = None
    cache_hit: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("supernet", "model"):
            raise ValueError(f"TrainResult.kind must be 'supernet' or 'model', got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@runtime_checkable
class Trainer(Protocol):
    """Trains a supernet (`ofa`) or a fixed arch (`standalone`); `fit` returns a `TrainResult`.

    `resume`: continue an interrupted training from the workdir's last checkpoint (the train stage sets it when
    the pipeline resumes). `training_space(space)`: the space this trainer trains for `space` (a supernet with an
    RNNPool stem pins the stages before its cut); the `space` stage scores its cells on it.
    """

    name: str
    resume: bool

    def training_space(self, space: SearchSpace) -> SearchSpace: ...
    def fit(self, space: SearchSpace, data: DataModule, workdir: str, tracker: Tracker) -> TrainResult: ...


class Problem(Protocol):
    """What a strategy searches (`tinyflow.search.problem.SearchProblem` implements it).

    A candidate is an arch and the scheduler options searched with it (`schedule_choices` names them and their
    choices; empty unless the search is joint). `draw` redraws until a candidate fits the budgets; `accuracy` is
    cached per arch and counts `n_evaluations`; `evaluated` holds one row per accuracy asked for.
    """

    space: Any  # an MBConv space: depth/kernel/expand choices, stages, n_slots
    budgets: Any  # tinyflow.search.problem.Budgets: violations(costs), slack(costs)
    schedule_choices: dict[str, tuple[int, ...]]
    n_evaluations: int
    evaluated: list[dict[str, Any]]

    @property
    def joint(self) -> bool: ...
    def make(self, genome: dict[str, list[int]], schedule: dict[str, int]) -> Any: ...
    def sample(self, rng: random.Random) -> Any: ...
    def mutate(self, cand: Any, rng: random.Random, prob: float) -> Any: ...
    def crossover(self, a: Any, b: Any, rng: random.Random) -> Any: ...
    def draw(self, make: Callable[[], Any]) -> Any: ...
    def costs(self, cand: Any) -> Any: ...
    def violations(self, cand: Any) -> list[str]: ...
    def accuracy(self, cand: Any) -> float: ...
    def is_evaluated(self, cand: Any) -> bool: ...


@runtime_checkable
class Strategy(Protocol):
    """Searches for the best arch under constraints.

    `settings` are the options the `search` stage reads; `planned_evaluations` the accuracy evaluations the
    strategy expects to spend (for a progress bar; None when unknown).
    """

    name: str
    settings: SearchSettings

    @property
    def planned_evaluations(self) -> int | None: ...
    def search(self, problem: Problem, rng: random.Random) -> SearchResult: ...


@dataclass
class ReportSection:
    """A backend's section of the run report: a title, rows and, optionally, notes (paragraphs).

    A row is `(label, value)` or `(label, value, note)` (the report's "against / note" column). The report renders
    it as it is, without knowing which backend wrote it."""

    title: str
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rows = [tuple(row) for row in self.rows]
        for row in self.rows:
            if len(row) not in (2, 3):
                raise ValueError(f"ReportSection '{self.title}': a row is (label, value[, note]), got {row!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "rows": [[str(c) for c in r] for r in self.rows], "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReportSection:
        return cls(str(d["title"]), [tuple(str(c) for c in r) for r in d.get("rows", [])], list(d.get("notes", [])))


@dataclass
class BackendResult:
    """What a backend returns: `metrics` (name -> number, into the run's metrics and MLflow), `checks` (name ->
    value: what it verified, e.g. bit_exact, fits), `files` (name -> path it wrote), `sections` (report
    sections), `details` (name -> its own JSON-ready figures, each kept in the run context's `extra` and in
    `report.json` under its name, e.g. backend `c`'s `firmware`)."""

    metrics: dict[str, float] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    sections: list[ReportSection] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """Deploys the `Deployment` the schedule stage made (onnxruntime on the host; C firmware on qemu; …).

    `deployment` is the planned network (description, int8 IR with its quantization, plan, analysis); `model`
    the final PyTorch model (None when the run has none); `files` what the `quantize` stage exported (`onnx`:
    float, `onnx_int8`: QDQ int8). A backend declares its own options as its constructor's keywords (no
    `**options`: an option it does not know is a ConfigError naming it), their ranges optionally in a class
    attribute `option_ranges` (`{"runs": {"min": 1}}`, checked before the first stage), and raises a
    TinyflowError when a check fails loudly. Its report sections are rendered as they are."""

    name: str

    def deploy(
        self,
        deployment: Deployment,
        model: Any,
        data: DataModule,
        workdir: str,
        tracker: Tracker,
        files: dict[str, str],
    ) -> BackendResult: ...


@runtime_checkable
class Tracker(Protocol):
    """Experiment tracking: one parent run per job, one child run per stage.

    The pipeline activates the tracker (`tinyflow.tracking.activate`) around the job; stages and plugins reach it
    through `tinyflow.tracking.active_tracker()`. `parent_id` is the job's run id (None outside a job or when the
    tracker keeps no ids).
    """

    parent_id: str | None

    def prepare(self) -> None: ...  # once in the launching process, before any job of a run/sweep (shared stores)
    def job(self, cfg: Any, tags: dict[str, str]) -> AbstractContextManager[Any]: ...
    def stage(self, name: str) -> AbstractContextManager[Any]: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str, artifact_path: str | None = None) -> None: ...
    def log_figure(self, figure: Any, name: str) -> None: ...
    def log_text(self, text: str, name: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_parent_metrics(self, metrics: dict[str, float]) -> None: ...
    def log_onnx_model(self, path: str, name: str = "model") -> None: ...


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
        if (callable(value) or isinstance(value, property)) and not name.startswith("_"):
            yield name
