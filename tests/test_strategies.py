"""Strategies on a toy objective: constraints hold, budgets are respected, evolution beats random."""

from __future__ import annotations

import random

import pytest

from search_toys import toy_accuracy, toy_costs
from tinyflow.arch.space import MBConvSpace
from tinyflow.contracts import SearchResult, Strategy
from tinyflow.errors import BudgetError, ConfigError
from tinyflow.search.problem import Budgets, SearchProblem
from tinyflow_plugins.strategies.evolution import EvolutionStrategy
from tinyflow_plugins.strategies.optuna_search import OptunaStrategy
from tinyflow_plugins.strategies.random_search import RandomStrategy

SPACE = MBConvSpace(width_mult=0.5, resolution=64, num_classes=10)
PATCH_CHOICES = {"n_patches": (1, 2, 3, 4), "patch_blocks": (2, 3, 4, 5)}


def _median_peak(n: int = 200) -> int:
    rng = random.Random(123)
    peaks = sorted(toy_costs(SPACE.sample(rng)).peak_sram for _ in range(n))
    return peaks[n // 2]


def _problem(budget: int, joint: bool = False) -> SearchProblem:
    choices = PATCH_CHOICES if joint else {}
    return SearchProblem(SPACE, toy_accuracy, toy_costs, Budgets(sram_bytes=budget), schedule_choices=choices)


def small_evolution(**kw):
    return EvolutionStrategy(population=20, parent_ratio=0.25, iterations=6, **kw)


@pytest.mark.parametrize(
    "strategy",
    [
        small_evolution(),
        RandomStrategy(n_evaluations=140, population=20),
        OptunaStrategy(n_evaluations=80, population=20),
    ],
    ids=["evolution", "random", "optuna"],
)
def test_strategy_contract_and_constraints(strategy):
    assert isinstance(strategy, Strategy)
    budget = _median_peak()
    problem = _problem(budget)
    res = strategy.search(problem, random.Random(0))
    assert isinstance(res, SearchResult)
    assert toy_costs(res.best).peak_sram <= budget
    assert res.best_score == pytest.approx(toy_accuracy(res.best))
    assert all(r["peak_sram"] <= budget for r in res.evaluated)
    assert res.strategy == strategy.name and res.n_evaluations == problem.n_evaluations
    assert res.pareto and all(p["peak_sram"] <= budget for p in res.pareto)
    assert res.best.key() in {p["arch"].key() for p in res.pareto}  # the most accurate is never dominated
    bests = [h["best_so_far"] for h in res.history]
    assert bests == sorted(bests)  # best so far never decreases
    assert res.history[-1]["best_so_far"] == pytest.approx(res.best_score)


def test_evolution_evaluation_budget_counts_distinct_archs():
    problem = _problem(_median_peak())
    res = small_evolution().search(problem, random.Random(1))
    assert res.n_evaluations == problem.n_evaluations == len({r["arch"].key() for r in problem.evaluated})
    assert problem.n_evaluations <= 20 + 6 * 20
    capped = _problem(_median_peak())
    small_evolution(n_evaluations=50).search(capped, random.Random(1))
    assert capped.n_evaluations == 50


def test_evolution_beats_random_at_same_budget():
    budget = _median_peak()
    evo, rnd = [], []
    for seed in range(3):
        p = _problem(budget)
        e = small_evolution().search(p, random.Random(seed))
        q = _problem(budget)
        r = RandomStrategy(n_evaluations=p.n_evaluations, population=20).search(q, random.Random(seed))
        assert q.n_evaluations == p.n_evaluations
        evo.append(e.best_score)
        rnd.append(r.best_score)
    assert sum(evo) / 3 > sum(rnd) / 3


def test_joint_genome_carries_schedule_and_lowers_feasible_peak():
    # a budget below every layer-wise arch: only patch schedules can fit
    rng = random.Random(5)
    min_layer = min(toy_costs(SPACE.sample(rng)).peak_sram for _ in range(300))
    budget = int(min_layer * 0.6)
    with pytest.raises(BudgetError, match="no candidate satisfying"):
        small_evolution().search(
            SearchProblem(SPACE, toy_accuracy, toy_costs, Budgets(sram_bytes=budget), max_redraws=200), random.Random(0)
        )
    problem = _problem(budget, joint=True)
    res = small_evolution(joint=True).search(problem, random.Random(0))
    sched = res.best_schedule
    assert set(sched) == {"n_patches", "patch_blocks"} and sched["n_patches"] > 1
    assert toy_costs(res.best, sched).peak_sram <= budget


def test_optuna_reports_three_objective_pareto():
    problem = _problem(_median_peak())
    res = OptunaStrategy(n_evaluations=60, population=20).search(problem, random.Random(3))
    assert problem.n_evaluations == 60
    for a in res.pareto:
        for b in res.pareto:
            dominates = (
                b["accuracy"] >= a["accuracy"]
                and b["peak_sram"] <= a["peak_sram"]
                and b["macs"] <= a["macs"]
                and (b["accuracy"], b["peak_sram"], b["macs"]) != (a["accuracy"], a["peak_sram"], a["macs"])
            )
            assert not dominates


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"strategy.objective"):
        EvolutionStrategy(objective="oracle")
    with pytest.raises(ConfigError, match="population"):
        EvolutionStrategy(population=0)
    with pytest.raises(ConfigError, match="choices"):
        SearchProblem(SPACE, toy_accuracy, toy_costs, schedule_choices={"n_patches": []})


def test_budget_only_the_smallest_subnet_fits_starts_from_it_instead_of_failing():
    # the toy's flash grows with every block's size: a flash budget of the smallest subnet's own flash
    smallest = toy_costs(SPACE.min_arch()).flash
    rng = random.Random(7)
    assert min(toy_costs(SPACE.sample(rng)).flash for _ in range(200)) > smallest  # uniform draws miss it
    problem = SearchProblem(SPACE, toy_accuracy, toy_costs, Budgets(flash_bytes=smallest), max_redraws=200)
    res = small_evolution().search(problem, random.Random(0))
    assert problem.smallest()[0].arch == SPACE.min_arch()
    assert toy_costs(res.best).flash <= smallest and all(r["flash"] <= smallest for r in res.evaluated)
    # one byte less: nothing fits, and the error says the smallest subnet breaks the budget too
    with pytest.raises(BudgetError, match="the smallest subnet breaks them too"):
        small_evolution().search(
            SearchProblem(SPACE, toy_accuracy, toy_costs, Budgets(flash_bytes=smallest - 1), max_redraws=200),
            random.Random(0),
        )


def test_predictor_at_a_budget_few_subnets_fit_falls_back_to_measuring_them():
    # only the smallest subnet fits: the pair sampling stops once draws find nothing new (instead of 50 x n_samples
    # draws of 50 redraws each), and with too few pairs to cross-validate the search measures candidates directly
    from tinyflow.contracts import SearchSettings
    from tinyflow.search import predictor as predictor_module
    from tinyflow.stages.search import train_predictor
    from tinyflow.tracking import NullTracker

    smallest = toy_costs(SPACE.min_arch()).flash
    problem = SearchProblem(SPACE, toy_accuracy, toy_costs, Budgets(flash_bytes=smallest), max_redraws=200)
    calls = []

    def counted(arch):
        calls.append(arch.key())
        return toy_accuracy(arch)

    settings = SearchSettings(predictor={"n_samples": 50, "epochs": 2}, progress=False)
    predictor, metrics = train_predictor(settings, problem, counted, 0, NullTracker())
    assert predictor is None and metrics["predictor_skipped"] == 1.0
    assert metrics["predictor_pairs_found"] == len(set(calls)) < 10
    assert predictor_module.STALE_DRAWS == 200


def test_sample_pairs_stops_when_draws_find_nothing_new():
    from tinyflow.search.predictor import sample_pairs

    pool = [SPACE.min_arch(), SPACE.max_arch()]
    draws = []

    def draw(rng):
        draws.append(1)
        return pool[rng.randrange(2)]

    archs, accs = sample_pairs(draw, toy_accuracy, 100, seed=0)
    assert len(archs) == 2 and len(accs) == 2
    assert len(draws) < 300  # STALE_DRAWS in a row after the second one, not 50 x 100
