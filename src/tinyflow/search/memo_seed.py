"""Never worse with more memory (issue 26): the already-measured subnets that fit this search's budgets.

The accuracy memo (`tinyflow.search.accuracy_memo`) holds every subnet any job measured on this supernet — the
predictor's training pairs, a supernet-objective search's candidates, each search's chosen subnet — keyed by the
arch. A search at a looser budget than an earlier one on the same supernet can deploy anything the tighter search
could, so it reads them all (`fitting`), costs each with the search's own cost function and budget check
(`SearchProblem.violations`: the same scheduler, memory metric, device budgets, latency and energy), and keeps those
that fit, best measured accuracy first. The `search` stage takes the best of them whose placed arena fits (the same
`choose_verified` as the search's own result) when its measured accuracy beats the search's choice, so within one
sweep a budget's result is never below a tighter budget's (the tighter job's choice is in the memo and fits).

The strategies draw their own first population (none takes seeds), so the memo's subnets enter as the final
choice's fallback, not as the search's starting points.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from tinyflow.arch.genome import Arch
from tinyflow.arch.space import ArchOutsideSpaceError, MBConvSpace
from tinyflow.errors import TinyflowError
from tinyflow.search.problem import Candidate, SearchProblem

#: the most scheduler-option combinations tried per memo arch in a joint search (the first that fits is kept)
MAX_SCHEDULES = 64


@dataclass
class MemoCandidates:
    """The memo's subnets that fit the budgets, as search rows (`SearchProblem.record`, `accuracy` = the measured
    accuracy), best first; how many rows were read and how many were not of this supernet's space."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0
    foreign: int = 0

    @property
    def best(self) -> dict[str, Any] | None:
        return self.rows[0] if self.rows else None

    def summary(self) -> dict[str, float]:
        """Counts and the best accuracy, for the search summary and MLflow."""
        out = {"memo_subnets_read": float(self.read), "memo_subnets_fitting": float(len(self.rows))}
        if self.best is not None:
            out["memo_best_fitting_accuracy"] = float(self.best["accuracy"])
        return out

    def to_json(self) -> list[dict[str, Any]]:
        """The fitting subnets as `search/memo_candidates.json` lists them (genome, measured accuracy, costs)."""
        keep = ("accuracy", "peak_sram", "flash", "macs", "schedule")
        return [{"genome": r["arch"].genome, **{k: r[k] for k in keep}} for r in self.rows]


def arch_of_key(space: MBConvSpace, key: str) -> Arch | None:
    """The arch of a memo key (`Arch.key()`: the blocks, without the genome) rebuilt in `space`, or None when the
    key is not an arch of this space. Slots a stage does not use get the space's smallest choices."""
    try:
        data = json.loads(key)
        blocks = data["blocks"]
        depths: list[int] = []
        kernels = [min(space.kernel_choices)] * space.n_slots
        expands = [min(space.expand_choices)] * space.n_slots
        for s in range(len(space.stages)):
            mine = [b for b in blocks if b["stage"] == s + 1]
            depths.append(len(mine))
            for j, b in enumerate(mine[: space.max_depth]):
                slot = s * space.max_depth + j
                kernels[slot], expands[slot] = int(b["kernel"]), int(b["expand"])
        arch = space.build(depths, kernels, expands, int(data["resolution"]))
    except (ArchOutsideSpaceError, KeyError, TypeError, ValueError):
        return None
    return arch if arch.key() == key else None


def _schedules(problem: SearchProblem) -> list[dict[str, int]]:
    """The scheduler options to try per arch: none unless the search is joint, then its choices (capped)."""
    if not problem.joint:
        return [{}]
    names = list(problem.schedule_choices)
    combos = itertools.product(*(problem.schedule_choices[n] for n in names))
    return [dict(zip(names, c)) for c in itertools.islice(combos, MAX_SCHEDULES)]


def fitting(problem: SearchProblem, measured: list[tuple[str, float]]) -> MemoCandidates:
    """The measured (arch key, accuracy) pairs whose arch is of `problem.space` and fits `problem.budgets` under the
    search's costs, as search rows, best accuracy first (ties: less peak SRAM, fewer MACs, then the key)."""
    out = MemoCandidates(read=len(measured))
    for key, accuracy in measured:
        arch = arch_of_key(problem.space, key)
        if arch is None:
            out.foreign += 1
            continue
        for options in _schedules(problem):
            cand = Candidate(arch, tuple(sorted(options.items())))
            try:
                fits = problem.feasible(cand)
            except TinyflowError:  # the scheduler cannot plan it at all
                fits = False
            if fits:
                out.rows.append(problem.record(cand, float(accuracy)))
                break
    out.rows.sort(key=lambda r: (-r["accuracy"], r["peak_sram"], r["macs"], r["arch"].key()))
    return out


def memo_candidates(problem: SearchProblem, memo: Any, split: str = "val") -> MemoCandidates:
    """`fitting` over every subnet the memo holds for `split` (None memo: none)."""
    return fitting(problem, [] if memo is None else memo.items(split))
