"""What every strategy plugin shares: the settings the `search` stage reads (`SearchSettings`, defined with the
contracts), option checks, history rows, and turning a finished search into a `SearchResult`."""

from __future__ import annotations

from typing import Any

from tinyflow.contracts import Problem, SearchResult, SearchSettings
from tinyflow.errors import ConfigError, TinyflowError
from tinyflow.search.problem import best_row, pareto_front

__all__ = ["SearchSettings", "check_positive", "finish", "history_row"]


def check_positive(owner: str, **values: float) -> None:
    for name, v in values.items():
        if v is None or v < 0 or (name != "mutation_prob" and v == 0):
            raise ConfigError(f"strategy.{name} of '{owner}' must be positive, got {v}.")


def finish(name: str, problem: Problem, history: list[dict[str, Any]], **details: Any) -> SearchResult:
    """Best arch (highest accuracy among the feasible evaluated ones), the Pareto set, the history; `details` are
    the strategy's own counters."""
    rows = [r for r in problem.evaluated if r["feasible"]]
    if not rows:
        raise TinyflowError(f"strategy '{name}': no feasible candidate was evaluated; raise the evaluation budget.")
    best = best_row(rows)
    return SearchResult(
        best=best["arch"],
        best_score=best["accuracy"],
        pareto=pareto_front(rows),
        history=history,
        strategy=name,
        n_evaluations=problem.n_evaluations,
        evaluated=rows,
        best_schedule=dict(best["schedule"]),
        details=details,
    )


def history_row(step: int, problem: Problem, scores: list[float]) -> dict[str, Any]:
    """One history entry: best so far over everything evaluated, and this step's best and mean."""
    feasible = [r["accuracy"] for r in problem.evaluated if r["feasible"]]
    return {
        "step": step,
        "n_evaluations": problem.n_evaluations,
        "best_so_far": max(feasible) if feasible else float("nan"),
        "best_in_step": max(scores) if scores else float("nan"),
        "mean_in_step": sum(scores) / len(scores) if scores else float("nan"),
    }
