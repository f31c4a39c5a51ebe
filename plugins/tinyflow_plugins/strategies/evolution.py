"""Evolutionary search (MCUNet / OFA): keep the best parents, breed mutation and crossover children.

Every child that breaks a constraint (SRAM, flash, latency, energy) is rejected and redrawn, so the whole
population is always feasible. Accuracy is cached per arch: kept parents cost nothing to re-rank.
"""

from __future__ import annotations

import random
from typing import Any

from tinyflow.contracts import Problem, SearchResult
from tinyflow.search.problem import Candidate
from tinyflow.search.strategy import SearchSettings, check_positive, finish, history_row


class EvolutionStrategy:
    """MCUNet's defaults: population 100, top 20 kept as parents, 50 mutation + 50 crossover children per
    iteration (ratios of the population), mutation probability 0.1, 30 iterations.

    `n_evaluations` (optional) stops the search once that many distinct archs have been evaluated; null means
    the nominal budget, population + iterations × children.
    """

    name = "evolution"

    def __init__(
        self,
        population: int = 100,
        parent_ratio: float = 0.2,
        mutation_ratio: float = 0.5,
        crossover_ratio: float = 0.5,
        mutation_prob: float = 0.1,
        iterations: int = 30,
        n_evaluations: int | None = None,
        **settings: Any,
    ):
        check_positive(
            self.name,
            population=population,
            parent_ratio=parent_ratio,
            iterations=iterations,
            mutation_prob=mutation_prob,
        )
        check_positive(self.name, children=mutation_ratio + crossover_ratio)
        self.population = int(population)
        self.parents = max(1, round(parent_ratio * self.population))
        self.mutation_children = round(mutation_ratio * self.population)
        self.crossover_children = round(crossover_ratio * self.population)
        self.mutation_prob, self.iterations = float(mutation_prob), int(iterations)
        self.n_evaluations = None if n_evaluations is None else int(n_evaluations)
        self.settings = SearchSettings(**settings)

    @property
    def planned_evaluations(self) -> int:
        nominal = self.population + self.iterations * (self.mutation_children + self.crossover_children)
        return min(nominal, self.n_evaluations) if self.n_evaluations else nominal

    def _budget_left(self, problem: Problem) -> bool:
        return self.n_evaluations is None or problem.n_evaluations < self.n_evaluations

    def _rank(self, problem: Problem, pop: list[Candidate]) -> list[tuple[float, Candidate]]:
        scored = []
        for cand in pop:
            if not self._budget_left(problem) and not problem.is_evaluated(cand):
                continue  # out of budget: an unevaluated child is dropped, not guessed
            scored.append((problem.accuracy(cand), cand))
        scored.sort(key=lambda t: t[0], reverse=True)
        return scored

    def _children(self, problem: Problem, parents: list[Candidate], rng: random.Random) -> list[Candidate]:
        def mutant() -> Candidate:
            return problem.mutate(rng.choice(parents), rng, self.mutation_prob)

        def cross() -> Candidate:
            return problem.crossover(rng.choice(parents), rng.choice(parents), rng)

        children = [problem.draw(mutant) for _ in range(self.mutation_children)]
        return children + [problem.draw(cross) for _ in range(self.crossover_children)]

    def search(self, problem: Problem, rng: random.Random) -> SearchResult:
        pop = [problem.draw(lambda: problem.sample(rng)) for _ in range(self.population)]
        history: list[dict[str, Any]] = []
        for it in range(self.iterations + 1):
            ranked = self._rank(problem, pop)
            history.append(history_row(it, problem, [s for s, _ in ranked]))
            if it == self.iterations or not self._budget_left(problem):
                break
            parents = [c for _, c in ranked[: self.parents]]
            pop = parents + self._children(problem, parents, rng)
        return finish(self.name, problem, history, generations=len(history) - 1)
