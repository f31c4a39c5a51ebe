"""Evolutionary search (MCUNet / OFA): keep the best parents, breed mutation and crossover children.

Every child that breaks a constraint (SRAM, flash, latency, energy) is rejected and redrawn, so the whole
population is always feasible. Accuracy is cached per arch: kept parents cost nothing to re-rank.
"""

from __future__ import annotations

import random
from typing import Any

from tinyflow.contracts import SearchResult
from tinyflow.search.problem import Candidate, SearchProblem
from tinyflow.search.strategy import SearchSettings, check_positive, finish, history_row


class EvolutionStrategy:
    """MCUNet's defaults: population 100, 20 parents, 50 mutation + 50 crossover children, p = 0.1, 30 iterations.

    `max_evaluations` (optional) stops the search once that many distinct archs have been evaluated.
    """

    name = "evolution"

    def __init__(
        self,
        population: int = 100,
        parents: int = 20,
        mutation_children: int = 50,
        crossover_children: int = 50,
        mutation_prob: float = 0.1,
        iterations: int = 30,
        max_evaluations: int | None = None,
        **settings: Any,
    ):
        check_positive(
            self.name, population=population, parents=parents, iterations=iterations, mutation_prob=mutation_prob
        )
        check_positive(self.name, children=mutation_children + crossover_children)
        self.population, self.parents = int(population), int(parents)
        self.mutation_children, self.crossover_children = int(mutation_children), int(crossover_children)
        self.mutation_prob, self.iterations = float(mutation_prob), int(iterations)
        self.max_evaluations = None if max_evaluations is None else int(max_evaluations)
        self.settings = SearchSettings(**settings)

    def _budget_left(self, problem: SearchProblem) -> bool:
        return self.max_evaluations is None or problem.n_evaluations < self.max_evaluations

    def _rank(self, problem: SearchProblem, pop: list[Candidate]) -> list[tuple[float, Candidate]]:
        scored = []
        for cand in pop:
            if not self._budget_left(problem) and cand.arch.key() not in problem._acc_cache:
                continue  # out of budget: an unevaluated child is dropped, not guessed
            scored.append((problem.accuracy(cand), cand))
        scored.sort(key=lambda t: t[0], reverse=True)
        return scored

    def _children(self, problem: SearchProblem, parents: list[Candidate], rng: random.Random) -> list[Candidate]:
        def mutant() -> Candidate:
            return problem.mutate(rng.choice(parents), rng, self.mutation_prob)

        def cross() -> Candidate:
            return problem.crossover(rng.choice(parents), rng.choice(parents), rng)

        children = [problem.draw(mutant) for _ in range(self.mutation_children)]
        return children + [problem.draw(cross) for _ in range(self.crossover_children)]

    def search(self, problem: SearchProblem, rng: random.Random) -> SearchResult:
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
