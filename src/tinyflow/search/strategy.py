"""What every strategy plugin shares: the settings the `search` stage reads, and turning a finished search into
a `SearchResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tinyflow.contracts import SearchResult
from tinyflow.errors import ConfigError, TinyflowError
from tinyflow.search.problem import SearchProblem, best_row, pareto_front


@dataclass
class SearchSettings:
    """Options every `conf/strategy/*.yaml` carries besides the algorithm's own.

    objective: `supernet` (BN-recalibrated supernet accuracy, cached per arch) or `predictor` (an MLP trained on
    `predictor.n_samples` supernet-measured archs). joint: also search the patch scheduler's options (MCUNetV2).
    """

    objective: str = "predictor"
    joint: bool = False
    n_patches_choices: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    patch_blocks_choices: list[int] = field(default_factory=lambda: [2, 3, 4, 5])
    latency_budget_ms: float | None = None
    energy_budget_mj: float | None = None
    predictor: dict[str, Any] = field(default_factory=dict)
    memory_metric: str = "peak_live"  # or "arena": constrain the placed arena (every candidate planned; slower)
    torch_threads: int | None = 1  # threads while subnets are evaluated; None = torch's default
    progress: bool = True

    def __post_init__(self) -> None:
        if self.objective not in ("supernet", "predictor"):
            raise ConfigError(f"strategy.objective must be 'supernet' or 'predictor', got '{self.objective}'.")
        if self.memory_metric not in ("peak_live", "arena"):
            raise ConfigError(f"strategy.memory_metric must be 'peak_live' or 'arena', got '{self.memory_metric}'.")
        for name in ("n_patches_choices", "patch_blocks_choices"):
            values = list(getattr(self, name))
            if any(int(v) < 1 for v in values):
                raise ConfigError(f"strategy.{name} must hold positive integers, got {values}.")
            setattr(self, name, [int(v) for v in values])
        for name in ("latency_budget_ms", "energy_budget_mj"):
            v = getattr(self, name)
            if v is not None and float(v) <= 0:
                raise ConfigError(f"strategy.{name} must be positive or null, got {v}.")


def check_positive(owner: str, **values: float) -> None:
    for name, v in values.items():
        if v is None or v < 0 or (name != "mutation_prob" and v == 0):
            raise ConfigError(f"strategy.{name} of '{owner}' must be positive, got {v}.")


def finish(name: str, problem: SearchProblem, history: list[dict[str, Any]], **extra: Any) -> SearchResult:
    """Best arch (highest accuracy among the feasible evaluated ones), the Pareto set, the history."""
    rows = [r for r in problem.evaluated if r["feasible"]]
    if not rows:
        raise TinyflowError(f"strategy '{name}': no feasible candidate was evaluated; raise the evaluation budget.")
    best = best_row(rows)
    return SearchResult(
        best=best["arch"],
        best_score=best["accuracy"],
        pareto=pareto_front(rows),
        history=history,
        extra={
            "strategy": name,
            "n_evaluations": problem.n_evaluations,
            "best_schedule": best["schedule"],
            "best_peak_sram": best["peak_sram"],
            "best_flash": best["flash"],
            "best_macs": best["macs"],
            "best_latency_ms": best["latency_ms"],
            "best_energy_mj": best["energy_mj"],
            "evaluated": rows,
            **extra,
        },
    )


def history_row(step: int, problem: SearchProblem, scores: list[float]) -> dict[str, Any]:
    """One history entry: best so far over everything evaluated, and this step's best and mean."""
    feasible = [r["accuracy"] for r in problem.evaluated if r["feasible"]]
    return {
        "step": step,
        "n_evaluations": problem.n_evaluations,
        "best_so_far": max(feasible) if feasible else float("nan"),
        "best_in_step": max(scores) if scores else float("nan"),
        "mean_in_step": sum(scores) / len(scores) if scores else float("nan"),
    }
