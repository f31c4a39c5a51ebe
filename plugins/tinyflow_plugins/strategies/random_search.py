"""Random search: the baseline, at the same accuracy-evaluation budget as evolution."""

from __future__ import annotations

import random
from typing import Any

from tinyflow.contracts import Problem, SearchResult
from tinyflow.search.strategy import SearchSettings, check_positive, finish, history_row


class RandomStrategy:
    """Draw feasible candidates uniformly until `n_evaluations` distinct archs have been evaluated.

    The default budget equals evolution's default (100 + 30 × 100). A history row every `population`
    evaluations, so its curve lines up with evolution's generations.
    """

    name = "random"

    def __init__(self, n_evaluations: int = 3100, population: int = 100, max_draws_factor: int = 50, **settings: Any):
        check_positive(self.name, n_evaluations=n_evaluations, population=population, max_draws_factor=max_draws_factor)
        self.n_evaluations, self.population = int(n_evaluations), int(population)
        self.max_draws = int(max_draws_factor) * self.n_evaluations
        self.settings = SearchSettings(**settings)

    @property
    def planned_evaluations(self) -> int:
        return self.n_evaluations

    def search(self, problem: Problem, rng: random.Random) -> SearchResult:
        history: list[dict[str, Any]] = []
        scores: list[float] = []
        draws = 0
        # a small space may run out of new archs: stop after max_draws rather than loop for ever
        while problem.n_evaluations < self.n_evaluations and draws < self.max_draws:
            draws += 1
            before = problem.n_evaluations
            scores.append(problem.accuracy(problem.draw(lambda: problem.sample(rng))))
            if problem.n_evaluations != before and problem.n_evaluations % self.population == 0:
                history.append(history_row(len(history), problem, scores))
                scores = []
        if scores or not history:
            history.append(history_row(len(history), problem, scores))
        return finish(self.name, problem, history, draws=draws)
