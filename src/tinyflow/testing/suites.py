"""Behaviour suites for schedulers, cost models, search spaces and strategies: each `check_*` takes a built plugin,
runs it on something tiny and raises AssertionError saying what is wrong."""

from __future__ import annotations

import random
from typing import Any

from tinyflow.arch.genome import Arch
from tinyflow.arch.space import MBConvSpace, StageSpec
from tinyflow.contracts import (
    PROTOCOLS,
    CostModel,
    CostReport,
    Device,
    MemoryConfig,
    Scheduler,
    SearchResult,
    SearchSpace,
    Strategy,
)
from tinyflow.plugins import check_protocol


def tiny_space() -> MBConvSpace:
    """The default search space's shape at width 0.25, resolution 32 (a few ms to build and plan)."""
    return MBConvSpace(
        width_mult=0.25,
        resolution=32,
        in_channels=1,
        num_classes=10,
        stages=(StageSpec(24, 2), StageSpec(40, 2), StageSpec(80, 2), StageSpec(96, 1)),
        tail_channels=(),
        head_channels=128,
    )


def tiny_arch(largest: bool = False) -> Arch:
    """The smallest (or largest) arch of `tiny_space()`."""
    space = tiny_space()
    return space.max_arch() if largest else space.min_arch()


def tiny_device() -> Device:
    """A Cortex-M7 class part with MicroNets-style coefficients, so latency/energy cost models have what they need."""
    return Device(
        name="tiny-test",
        sram_kb=320,
        flash_kb=1024,
        core="cortex_m7",
        clock_mhz=216,
        macs_per_cycle=0.5,
        latency_ms_per_mop=1.0,
        energy_mj_per_mop=0.1,
        power_mw=300,
    )


def _is(obj: Any, group: str) -> None:
    check_protocol(obj, group, type(obj).__name__)
    assert isinstance(obj, PROTOCOLS[group]), f"{type(obj).__name__} does not satisfy {PROTOCOLS[group].__name__}"


# ---------------------------------------------------------------- scheduler
def check_plan(plan: Any, graph_macs: int | None = None) -> None:
    """An `ExecutionPlan` whose placed arena holds its peak and whose live tensors never share bytes."""
    from tinyflow.memory.arena import check_no_overlap
    from tinyflow.memory.plan import ExecutionPlan

    assert isinstance(plan, ExecutionPlan), f"plan() returned {type(plan).__name__}, not an ExecutionPlan"
    assert plan.steps, "the plan has no steps"
    assert plan.peak_live_bytes > 0, "peak_live_bytes must be positive"
    assert plan.arena_bytes >= plan.peak_live_bytes, f"arena {plan.arena_bytes} B < peak {plan.peak_live_bytes} B"
    check_no_overlap(plan.tensors)
    assert all(t.offset + t.size <= plan.arena_bytes for t in plan.tensors), "a tensor lies past the arena's end"
    if graph_macs is not None:
        assert plan.macs >= graph_macs, f"plan MACs {plan.macs} < the network's own {graph_macs}"


def check_scheduler(scheduler: Scheduler, memory: MemoryConfig | None = None, arch: Arch | None = None) -> Any:
    """Plan the network the scheduler deploys for a tiny arch; its closed form (if any) agrees with the plan.

    Returns the plan.
    """
    from tinyflow.cost import model_flash_bytes
    from tinyflow.network import DeployedNetwork

    _is(scheduler, "scheduler")
    memory = memory or MemoryConfig()
    arch = arch or tiny_arch()
    plain = DeployedNetwork.plain(arch)
    net = scheduler.network(plain)
    assert isinstance(net, DeployedNetwork), f"network() returned {type(net).__name__}, not a DeployedNetwork"
    assert scheduler.network(net) == net, "network() of the network it deploys must return it unchanged"
    graph = net.graph()
    plan = scheduler.plan(graph, memory)
    check_plan(plan, graph.macs())
    options = scheduler.search_options()
    assert isinstance(options, dict), "search_options() must return a dict"
    for name, choices in options.items():
        assert list(choices) and all(isinstance(v, int) for v in choices), f"search_options()[{name!r}]: {choices}"
    fast = scheduler.arch_costs(arch, memory)
    if fast is not None:
        assert net == plain, "arch_costs() is for a scheduler that deploys the plain network"
        got = (fast.peak_live_bytes, fast.flash_bytes, fast.macs)
        want = (plan.peak_live_bytes, model_flash_bytes(graph), plan.macs)
        assert got == want, f"arch_costs() gives (peak, flash, MACs) {got}, the plan {want}"
    return plan


# ---------------------------------------------------------------- cost model
def check_cost_model(model: CostModel, device: Device | None = None, scheduler: Scheduler | None = None) -> CostReport:
    """Totals add up: per-layer MACs and params sum to the report's; flash is positive; with a plan, MACs are the
    plan's. Returns the report of the tiny arch."""
    from tinyflow.ir import from_arch

    _is(model, "cost_model")
    device = device or tiny_device()
    graph = from_arch(tiny_arch())
    report = model.estimate(graph, device)
    assert isinstance(report, CostReport), f"estimate() returned {type(report).__name__}, not a CostReport"
    assert report.macs == graph.macs(), f"MACs {report.macs} != the graph's {graph.macs()}"
    assert report.params > 0 and report.flash_bytes > 0, "params and flash must be positive"
    if report.per_layer:
        for key, total in (("macs", report.macs), ("params", report.params)):
            summed = sum(int(r[key]) for r in report.per_layer)
            assert summed == total, f"per-layer {key} sum to {summed}, the total is {total}"
    for key in ("latency_ms", "energy_mj"):
        value = getattr(report, key)
        assert value is None or value > 0, f"{key} must be positive or None, got {value}"
    if scheduler is not None:
        plan = scheduler.plan(graph, MemoryConfig())
        assert model.estimate(graph, device, plan).macs == plan.macs, "with a plan, MACs must be the plan's"
    return report


# ---------------------------------------------------------------- search space
class _Data:
    name = "fake"

    def __init__(self, in_channels: int, num_classes: int):
        self.in_channels, self.num_classes = in_channels, num_classes


def check_search_space(space: SearchSpace, samples: int = 20, seed: int = 0) -> None:
    """Sampled archs are valid members within min/max; bind and with_width_resolution keep what they promise."""
    from tinyflow.cost import arch_cost

    _is(space, "search_space")
    rng = random.Random(seed)
    lo, hi = arch_cost(space.min_arch()).macs, arch_cost(space.max_arch()).macs
    assert lo <= hi, f"min_arch has more MACs ({lo}) than max_arch ({hi})"
    width = None
    for _ in range(samples):
        arch = space.sample(rng)
        assert isinstance(arch, Arch), f"sample() returned {type(arch).__name__}"
        assert (arch.resolution, arch.in_channels, arch.num_classes) == (
            space.resolution,
            getattr(space, "in_channels", arch.in_channels),
            getattr(space, "num_classes", arch.num_classes),
        ), "a sampled arch must have the space's resolution, input channels and classes"
        assert lo <= arch_cost(arch).macs <= hi, "a sampled arch lies outside [min_arch, max_arch] in MACs"
        genome = space.sample_genome(rng)
        built = space.build(genome["depths"], genome["kernels"], genome["expands"])
        assert lo <= arch_cost(built).macs <= hi, "an arch built from a sampled genome lies outside min/max"
        code = space.encode(arch)
        assert width is None or len(code) == width, "encode() must give vectors of one length"
        width = len(code)
    bound = space.bind(_Data(3, 7))
    assert (bound.min_arch().in_channels, bound.min_arch().num_classes) == (3, 7), "bind(data) must take its sizes"
    other = space.with_width_resolution(space.width_mult, space.resolution + 8)
    assert other.min_arch().resolution == space.resolution + 8, "with_width_resolution must set the resolution"
    assert space.fixed_stages >= 0, "fixed_stages must be >= 0"


# ---------------------------------------------------------------- strategy
def toy_costs(arch: Arch, schedule: dict[str, int] | None = None) -> Any:
    """The engine's closed-form layer costs; a schedule option divides the peak (a stand-in for patching)."""
    from tinyflow.cost import arch_cost
    from tinyflow.search.problem import Costs

    c = arch_cost(arch)
    div = max(1, int((schedule or {}).get("n_patches", 1)))
    return Costs(peak_sram=c.peak_live_bytes // div, flash=c.flash_bytes, macs=c.macs)


def toy_accuracy(arch: Arch) -> float:
    """Cheap, deterministic, grows with MACs: in (0, 1)."""
    from tinyflow.cost import arch_cost

    return 1.0 - 1.0 / (2.0 + arch_cost(arch).macs / 1e5)


def check_strategy(strategy: Strategy, seed: int = 0, joint: bool = False) -> SearchResult:
    """On a tiny problem with SRAM and flash budgets at the sampled medians: the best and every evaluated row fit,
    the best is the most accurate feasible row, counters match the problem. Returns the result."""
    from tinyflow.search.problem import Budgets, SearchProblem

    _is(strategy, "strategy")
    space = tiny_space()
    rng = random.Random(1234)
    samples = [toy_costs(space.sample(rng)) for _ in range(60)]
    peaks = sorted(c.peak_sram for c in samples)
    flashes = sorted(c.flash for c in samples)
    budgets = Budgets(sram_bytes=peaks[len(peaks) // 2], flash_bytes=flashes[len(flashes) * 3 // 4])
    choices = {"n_patches": (1, 2)} if joint else {}
    problem = SearchProblem(space, toy_accuracy, toy_costs, budgets, schedule_choices=choices)
    result = strategy.search(problem, random.Random(seed))
    assert isinstance(result, SearchResult), f"search() returned {type(result).__name__}"
    best_costs = toy_costs(result.best, result.best_schedule)
    assert not budgets.violations(best_costs), f"the best breaks the budgets: {budgets.violations(best_costs)}"
    assert result.evaluated and all(
        not budgets.violations(toy_costs(r["arch"], r["schedule"])) for r in result.evaluated
    )
    assert result.best_score == max(r["accuracy"] for r in result.evaluated), "the best is not the most accurate"
    assert abs(result.best_score - toy_accuracy(result.best)) < 1e-9, "best_score is not the best's accuracy"
    assert result.n_evaluations == problem.n_evaluations > 0, "n_evaluations must be the problem's count"
    assert set(result.best_schedule) <= set(choices), f"best_schedule {result.best_schedule} outside {choices}"
    assert result.history, "the history is empty"
    planned = strategy.planned_evaluations
    assert planned is None or planned > 0, "planned_evaluations must be positive or None"
    return result
