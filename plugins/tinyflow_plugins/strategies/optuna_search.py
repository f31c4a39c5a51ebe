"""Multi-objective search with Optuna's NSGA-II sampler: accuracy up, peak SRAM down, MACs down.

The genome is searched as categorical parameters (depth per stage, kernel and expand per slot, and with
`joint` the scheduler options it offers). Constraints go to NSGA-II as trial constraints (cost / budget − 1,
feasible when ≤ 0, so a feasible trial always dominates an infeasible one); an infeasible trial is never
given to the accuracy evaluator, so it spends no evaluation budget.
"""

from __future__ import annotations

import random
from typing import Any

from tinyflow.contracts import Problem, SearchResult
from tinyflow.search.strategy import SearchSettings, check_positive, finish, history_row


class OptunaStrategy:
    """NSGA-II over the genome; stops after `n_evaluations` distinct archs (or `max_trials` trials)."""

    name = "optuna"

    def __init__(
        self,
        n_evaluations: int = 3100,
        population: int = 100,
        mutation_prob: float | None = None,
        crossover_prob: float = 0.9,
        max_trials_factor: int = 20,
        **settings: Any,
    ):
        check_positive(
            self.name, n_evaluations=n_evaluations, population=population, max_trials_factor=max_trials_factor
        )
        self.n_evaluations, self.population = int(n_evaluations), int(population)
        self.mutation_prob, self.crossover_prob = mutation_prob, float(crossover_prob)
        self.max_trials = int(max_trials_factor) * self.n_evaluations
        self.settings = SearchSettings(**settings)

    @property
    def planned_evaluations(self) -> int:
        return self.n_evaluations

    def search(self, problem: Problem, rng: random.Random) -> SearchResult:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sp = problem.space
        sampler = optuna.samplers.NSGAIISampler(
            population_size=self.population,
            mutation_prob=self.mutation_prob,
            crossover_prob=self.crossover_prob,
            seed=rng.randrange(2**31),
        )
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
        history: list[dict[str, Any]] = []
        scores: list[float] = []

        def objective(trial: optuna.Trial) -> tuple[float, float, float]:
            genome = {
                "depths": [trial.suggest_categorical(f"d{s}", list(sp.depth_choices)) for s in range(len(sp.stages))],
                "kernels": [trial.suggest_categorical(f"k{i}", list(sp.kernel_choices)) for i in range(sp.n_slots)],
                "expands": [trial.suggest_categorical(f"e{i}", list(sp.expand_choices)) for i in range(sp.n_slots)],
            }
            if sp.elastic_resolution:  # the input resolution is searched with the arch (MCUNetV2)
                genome["resolution"] = trial.suggest_categorical("resolution", list(sp.resolutions))
            sched = {name: trial.suggest_categorical(name, list(ch)) for name, ch in problem.schedule_choices.items()}
            cand = problem.make(genome, sched)
            costs = problem.costs(cand)
            for name, value in problem.budgets.slack(costs).items():
                trial.set_constraint(name, value)
            if problem.budgets.violations(costs):
                # never evaluated; NSGA-II ranks it below every feasible trial by its constraint values
                return 0.0, float(costs.peak_sram), float(costs.macs)
            before = problem.n_evaluations
            acc = problem.accuracy(cand)
            scores.append(acc)
            if problem.n_evaluations != before and problem.n_evaluations % self.population == 0:
                history.append(history_row(len(history), problem, scores))
                scores.clear()
            if problem.n_evaluations >= self.n_evaluations:
                trial.study.stop()
            return acc, float(costs.peak_sram), float(costs.macs)

        study.optimize(objective, n_trials=self.max_trials)
        if scores or not history:
            history.append(history_row(len(history), problem, scores))
        return finish(self.name, problem, history, trials=len(study.trials))
