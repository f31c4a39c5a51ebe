"""The search problem every strategy works on: genome operators, costs, constraints, cached accuracy.

A candidate is an MBConv genome (depth per stage, kernel and expand per slot, and the input resolution when
the supernet's space has elastic resolution — MCUNetV2 searches it jointly) and, for joint search
(MCUNetV2), the options the scheduler lets a search vary (`Scheduler.search_options()`, e.g. the patch
scheduler's `n_patches` and `patch_blocks`). Costs come from a callable supplied by the
caller (the memory engine's plan of the chosen scheduler); accuracy from another (the supernet or a predictor).
Accuracy is cached per arch, so the number of accuracy evaluations a strategy spends is the number of distinct
archs it asked about; this is the budget strategies are compared at.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyflow.arch.genome import Arch
from tinyflow.arch.space import MBConvSpace
from tinyflow.errors import BudgetError, ConfigError, TinyflowError

log = logging.getLogger(__name__)

#: draws per candidate once uniform draws have failed and the search holds the smallest fitting subnet
FALLBACK_REDRAWS = 50


@dataclass(frozen=True)
class Candidate:
    """One point of the search: the arch and the scheduler options searched with it ({} unless joint)."""

    arch: Arch
    schedule: tuple[tuple[str, int], ...] = ()

    @property
    def genome(self) -> dict[str, Any]:
        return self.arch.genome

    @property
    def schedule_options(self) -> dict[str, int]:
        return dict(self.schedule)

    def key(self) -> tuple[str, tuple[tuple[str, int], ...]]:
        return (self.arch.key(), self.schedule)


@dataclass(frozen=True)
class Costs:
    """What the memory engine / cost model says of a candidate. Bytes for memory, MACs as multiply-adds."""

    peak_sram: int
    flash: int
    macs: int
    latency_ms: float | None = None
    energy_mj: float | None = None
    invalid: str = ""  # why the scheduler cannot run this candidate at all (joint search: e.g. a grid too fine)
    network_macs: int | None = None  # the network's own MACs; `macs` adds what the plan recomputes (patch overlap)
    schedule: tuple[tuple[str, int], ...] = ()  # the options of the plan the scheduler chose (() = its default)

    @property
    def capacity_macs(self) -> int:
        """The network's own MACs (its capacity), without a plan's recomputation."""
        return self.macs if self.network_macs is None else self.network_macs


@dataclass(frozen=True)
class Budgets:
    """Hard constraints; None means unconstrained."""

    sram_bytes: int | None = None
    flash_bytes: int | None = None
    latency_ms: float | None = None
    energy_mj: float | None = None

    def violations(self, c: Costs) -> list[str]:
        """Human-readable list of broken constraints (empty: the candidate fits)."""
        out = [c.invalid] if c.invalid else []
        if self.sram_bytes is not None and c.peak_sram > self.sram_bytes:
            out.append(f"peak SRAM {c.peak_sram} B > {self.sram_bytes} B")
        if self.flash_bytes is not None and c.flash > self.flash_bytes:
            out.append(f"flash {c.flash} B > {self.flash_bytes} B")
        if self.latency_ms is not None:
            if c.latency_ms is None:
                raise ConfigError(
                    "strategy.latency_budget_ms is set but the cost model gives no latency; "
                    "choose cost_model=micronets or drop the latency budget."
                )
            if c.latency_ms > self.latency_ms:
                out.append(f"latency {c.latency_ms:.2f} ms > {self.latency_ms} ms")
        if self.energy_mj is not None:
            if c.energy_mj is None:
                raise ConfigError(
                    "strategy.energy_budget_mj is set but the cost model gives no energy; "
                    "choose cost_model=micronets or drop the energy budget."
                )
            if c.energy_mj > self.energy_mj:
                out.append(f"energy {c.energy_mj:.3f} mJ > {self.energy_mj} mJ")
        return out

    def slack(self, c: Costs) -> dict[str, float]:
        """Per set constraint, cost / budget − 1: ≤ 0 means satisfied (Optuna's constraint convention)."""
        pairs = {
            "sram": (c.peak_sram, self.sram_bytes),
            "flash": (c.flash, self.flash_bytes),
            "latency": (c.latency_ms, self.latency_ms),
            "energy": (c.energy_mj, self.energy_mj),
        }
        out = {k: float(v) / float(b) - 1.0 for k, (v, b) in pairs.items() if b is not None and v is not None}
        if c.invalid:
            out["invalid"] = 1.0
        return out


CostFn = Callable[[Arch, dict[str, int]], Costs]
AccuracyFn = Callable[[Arch], float]


@dataclass
class SearchProblem:
    """Genome operators + feasibility + cached evaluation, shared by every strategy (`tinyflow.contracts.Problem`).

    `schedule_choices` (joint search) adds one gene per scheduler option, drawn from its choices in the order
    given; the cost function then receives them as the scheduler options.
    """

    space: MBConvSpace
    accuracy_fn: AccuracyFn
    cost_fn: CostFn
    budgets: Budgets = field(default_factory=Budgets)
    schedule_choices: dict[str, tuple[int, ...]] = field(default_factory=dict)
    max_redraws: int = 2000
    n_evaluations: int = 0
    _acc_cache: dict[str, float] = field(default_factory=dict, repr=False)
    _cost_cache: dict[Any, Costs] = field(default_factory=dict, repr=False)
    evaluated: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _fallback: Candidate | None = field(default=None, repr=False)  # the smallest fitting subnet, once draws failed

    def __post_init__(self) -> None:
        self.schedule_choices = {k: tuple(int(v) for v in vs) for k, vs in self.schedule_choices.items()}
        empty = [k for k, vs in self.schedule_choices.items() if not vs]
        if empty:
            raise ConfigError(f"joint search: the scheduler offers no choices for {empty}; give at least one each.")

    @property
    def joint(self) -> bool:
        """Whether scheduler options are searched with the arch."""
        return bool(self.schedule_choices)

    # ---- genome operators ------------------------------------------------------------------------------
    def make(self, genome: dict[str, list[int]], schedule: dict[str, int]) -> Candidate:
        """The candidate of a genome and scheduler options."""
        arch = self.space.build(genome["depths"], genome["kernels"], genome["expands"], genome.get("resolution"))
        return Candidate(arch, tuple(sorted(schedule.items())))

    def _sample_schedule(self, rng: random.Random) -> dict[str, int]:
        return {name: rng.choice(choices) for name, choices in self.schedule_choices.items()}

    def sample(self, rng: random.Random) -> Candidate:
        """A uniformly random candidate (feasible or not)."""
        return self.make(self.space.sample_genome(rng), self._sample_schedule(rng))

    def mutate(self, cand: Candidate, rng: random.Random, prob: float) -> Candidate:
        """Resample each gene independently with probability `prob` (OFA / MCUNet mutation)."""
        g = cand.genome
        sp = self.space
        depths = [rng.choice(sp.depth_choices) if rng.random() < prob else d for d in g["depths"]]
        kernels = [rng.choice(sp.kernel_choices) if rng.random() < prob else k for k in g["kernels"]]
        expands = [rng.choice(sp.expand_choices) if rng.random() < prob else e for e in g["expands"]]
        genome: dict[str, Any] = {"depths": depths, "kernels": kernels, "expands": expands}
        if sp.elastic_resolution:  # the input resolution is a gene too (MCUNetV2's joint search)
            genome["resolution"] = rng.choice(sp.resolutions) if rng.random() < prob else cand.arch.resolution
        sched = cand.schedule_options
        for name, choices in self.schedule_choices.items():
            if rng.random() < prob:
                sched[name] = rng.choice(choices)
        return self.make(genome, sched)

    def crossover(self, a: Candidate, b: Candidate, rng: random.Random) -> Candidate:
        """Each gene from either parent with equal probability (uniform crossover)."""
        ga, gb = a.genome, b.genome
        genome = {
            k: [x if rng.random() < 0.5 else y for x, y in zip(ga[k], gb[k])] for k in ("depths", "kernels", "expands")
        }
        if self.space.elastic_resolution:
            genome["resolution"] = a.arch.resolution if rng.random() < 0.5 else b.arch.resolution
        sa, sb = a.schedule_options, b.schedule_options
        sched = {k: sa[k] if rng.random() < 0.5 else sb[k] for k in sa}
        return self.make(genome, sched)

    # ---- costs and constraints -------------------------------------------------------------------------
    def costs(self, cand: Candidate) -> Costs:
        """Cached costs; with `joint`, schedule options the scheduler rejects make an invalid (infeasible) candidate."""
        key = cand.key()
        if key not in self._cost_cache:
            try:
                self._cost_cache[key] = self.cost_fn(cand.arch, cand.schedule_options)
            except TinyflowError as exc:
                if not self.joint:
                    raise
                self._cost_cache[key] = Costs(0, 0, 0, invalid=f"schedule {cand.schedule_options}: {exc}")
        return self._cost_cache[key]

    def violations(self, cand: Candidate) -> list[str]:
        return self.budgets.violations(self.costs(cand))

    def feasible(self, cand: Candidate) -> bool:
        return not self.violations(cand)

    def smallest(self) -> list[Candidate]:
        """The space's smallest subnet at each of its resolutions, lowest first, with every combination of the
        searched scheduler options: what a budget too tight for uniform draws may still fit."""
        genome = dict(self.space.min_arch().genome)
        resolutions = sorted(self.space.resolutions) if self.space.elastic_resolution else [None]
        combos = list(itertools.product(*self.schedule_choices.values()))
        return [
            self.make({**genome, "resolution": r}, dict(zip(self.schedule_choices, combo, strict=True)))
            for r in resolutions
            for combo in combos
        ]

    def draw(self, make: Callable[[], Candidate]) -> Candidate:
        """Call `make` until it returns a feasible candidate (a broken constraint is rejected and redrawn).

        When `max_redraws` draws find none, the smallest subnets (`smallest`) are tried: at a budget so tight that
        uniform draws almost never fit, the search starts from the smallest subnet that fits (and later draws try
        `FALLBACK_REDRAWS` times before returning it again, so mutations and crossovers around it are explored)."""
        last: list[str] = []
        for _ in range(self.max_redraws if self._fallback is None else min(self.max_redraws, FALLBACK_REDRAWS)):
            cand = make()
            last = self.violations(cand)
            if not last:
                return cand
        if self._fallback is None:
            smallest = self.smallest()
            self._fallback = next((c for c in smallest if self.feasible(c)), None)
            if self._fallback is None:
                broke = "; ".join(self.violations(smallest[0]))
                raise BudgetError(
                    f"search: no candidate satisfying the constraints in {self.max_redraws} draws (last one broke: "
                    f"{'; '.join(last)}), and the smallest subnet breaks them too ({broke}). Loosen the device "
                    "budgets or choose a smaller width/resolution (run the `space` stage first, or lower "
                    "search_space.width_mult / resolution)."
                )
            log.info(
                "search: %d uniform draws found no subnet within the budgets; the smallest subnet fits (r%d%s): the "
                "search starts from it",
                self.max_redraws,
                self._fallback.arch.resolution,
                f", {dict(self._fallback.schedule_options)}" if self._fallback.schedule_options else "",
            )
        return self._fallback

    # ---- accuracy --------------------------------------------------------------------------------------
    def is_evaluated(self, cand: Candidate) -> bool:
        """Whether the candidate's arch already has a (cached) accuracy: asking again costs no evaluation."""
        return cand.arch.key() in self._acc_cache

    def accuracy(self, cand: Candidate) -> float:
        """Accuracy of the candidate's arch, cached: only a new arch counts as an evaluation."""
        key = cand.arch.key()
        if key not in self._acc_cache:
            self._acc_cache[key] = float(self.accuracy_fn(cand.arch))
            self.n_evaluations += 1
        acc = self._acc_cache[key]
        self.evaluated.append(self.record(cand, acc))
        return acc

    def record(self, cand: Candidate, accuracy: float) -> dict[str, Any]:
        c = self.costs(cand)
        return {
            "arch": cand.arch,
            "schedule": cand.schedule_options or dict(c.schedule),  # searched genes, else the scheduler's choice
            "schedule_genes": cand.schedule_options,
            "accuracy": accuracy,
            "peak_sram": c.peak_sram,
            "flash": c.flash,
            "macs": c.macs,
            "latency_ms": c.latency_ms,
            "energy_mj": c.energy_mj,
            "feasible": not self.budgets.violations(c),
        }


def pareto_front(
    rows: list[dict[str, Any]], keys: tuple[tuple[str, int], ...] = (("accuracy", 1), ("peak_sram", -1), ("macs", -1))
) -> list[dict[str, Any]]:
    """Non-dominated rows; `keys` gives (field, +1 to maximise / −1 to minimise). Duplicates kept once."""
    unique: dict[Any, dict[str, Any]] = {}
    for r in rows:
        unique[(r["arch"].key(), tuple(sorted(r.get("schedule", {}).items())))] = r
    pts = list(unique.values())
    if not pts:
        return []
    vals = np.array([[sign * float(r[k]) for k, sign in keys] for r in pts])
    front = []
    for i, vi in enumerate(vals):
        dominated = np.any(np.all(vals >= vi, axis=1) & np.any(vals > vi, axis=1))
        if not dominated:
            front.append(pts[i])
    front.sort(key=lambda r: (r[keys[1][0]] if len(keys) > 1 else 0, -r[keys[0][0]]))
    return front


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Highest accuracy; ties broken by lower peak SRAM, then fewer MACs."""
    return max(rows, key=lambda r: (r["accuracy"], -r["peak_sram"], -r["macs"]))
