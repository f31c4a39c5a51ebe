"""TinyNAS stage 1: choose the width multiplier and resolution of the search space (MCUNet §3.1).

For every (width, resolution) cell, sample subnets, keep those that fit the device (peak SRAM of the chosen
scheduler and flash within budget) and pick the cell whose fitting subnets have the largest mean MACs: the
space most likely to hold a large model that still fits. Capacity is the network's own MACs
(`Costs.capacity_macs`), never the recomputation a patch plan adds to run it. The same sampled genomes are
resolved in every cell (common random numbers), so cells differ only by width and resolution, not by sampling
luck.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyflow.arch.genome import Arch
from tinyflow.arch.space import MBConvSpace
from tinyflow.errors import BudgetError, ConfigError
from tinyflow.search.problem import Costs

CDF_QUANTILES = tuple(i / 20 for i in range(21))


@dataclass
class CellStats:
    """What one (width, resolution) cell looks like under the device budgets."""

    width_mult: float
    resolution: int
    n_samples: int
    n_fit: int
    macs_fit: np.ndarray  # sorted own MACs (no plan recomputation) of the fitting subnets (the CDF's support)
    min_peak_sram: int
    min_flash: int
    closeness: float  # min over samples of max(peak / SRAM budget, flash / flash budget); ≤ 1 fits

    @property
    def fit_share(self) -> float:
        return self.n_fit / self.n_samples if self.n_samples else 0.0

    @property
    def mean_macs(self) -> float:
        return float(self.macs_fit.mean()) if self.n_fit else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-friendly figures, with the MACs CDF as quantiles."""
        q = np.quantile(self.macs_fit, CDF_QUANTILES).tolist() if self.n_fit else []
        return {
            "width_mult": self.width_mult,
            "resolution": self.resolution,
            "n_samples": self.n_samples,
            "n_fit": self.n_fit,
            "fit_share": self.fit_share,
            "mean_macs": self.mean_macs,
            "min_peak_sram": self.min_peak_sram,
            "min_flash": self.min_flash,
            "macs_quantiles": q,
        }


@dataclass
class SpaceResult:
    cells: list[CellStats]
    best: CellStats
    sram_budget: int
    flash_budget: int
    seconds: float
    n_evaluations: int
    extra: dict[str, Any] = field(default_factory=dict)

    def stats(self) -> dict[str, Any]:
        """What the `space` stage stores in the run context."""
        return {
            "chosen": {"width_mult": self.best.width_mult, "resolution": self.best.resolution},
            "chosen_mean_macs": self.best.mean_macs,
            "chosen_fit_share": self.best.fit_share,
            "sram_budget_bytes": self.sram_budget,
            "flash_budget_bytes": self.flash_budget,
            "n_evaluations": self.n_evaluations,
            "seconds": self.seconds,
            "cdf_quantiles": list(CDF_QUANTILES),
            "cells": [c.summary() for c in self.cells],
            **self.extra,
        }


def _validate(widths: Sequence[float], resolutions: Sequence[int], samples: int) -> None:
    if not widths or any(float(w) <= 0 for w in widths):
        raise ConfigError(f"space.widths must be a non-empty list of positive width multipliers, got {list(widths)}.")
    if not resolutions or any(int(r) <= 0 or int(r) != r for r in resolutions):
        raise ConfigError(f"space.resolutions must be a non-empty list of positive integers, got {list(resolutions)}.")
    if samples < 1:
        raise ConfigError(f"space.samples_per_cell must be ≥ 1, got {samples}.")


def optimize_space(
    space: MBConvSpace,
    widths: Sequence[float],
    resolutions: Sequence[int],
    cost_fn: Callable[[Arch], Costs],
    sram_budget: int,
    flash_budget: int,
    samples_per_cell: int = 1000,
    seed: int = 0,
    min_fit_share: float = 0.0,
    progress: bool = True,
) -> SpaceResult:
    """Scan every (w, r) cell; return per-cell statistics and the chosen cell.

    Raises BudgetError when no sampled subnet in any cell fits, naming the smallest peak SRAM and flash seen and
    the cell that came closest.
    """
    _validate(widths, resolutions, samples_per_cell)
    rng = random.Random(seed)
    genomes = [space.sample_genome(rng) for _ in range(samples_per_cell)]
    cells_wr = [(float(w), int(r)) for w in widths for r in resolutions]
    cells: list[CellStats] = []
    start = time.perf_counter()
    with _progress(progress, len(cells_wr) * samples_per_cell) as advance:
        for w, r in cells_wr:
            cell_space = space.with_width_resolution(w, r)
            peaks = np.empty(samples_per_cell, dtype=np.int64)
            flashes = np.empty(samples_per_cell, dtype=np.int64)
            macs = np.empty(samples_per_cell, dtype=np.int64)
            for i, g in enumerate(genomes):
                c = cost_fn(cell_space.build(g["depths"], g["kernels"], g["expands"]))
                peaks[i], flashes[i], macs[i] = c.peak_sram, c.flash, c.capacity_macs
            fit = (peaks <= sram_budget) & (flashes <= flash_budget)
            ratio = np.maximum(peaks / max(sram_budget, 1), flashes / max(flash_budget, 1))
            cells.append(
                CellStats(
                    width_mult=w,
                    resolution=r,
                    n_samples=samples_per_cell,
                    n_fit=int(fit.sum()),
                    macs_fit=np.sort(macs[fit]),
                    min_peak_sram=int(peaks.min()),
                    min_flash=int(flashes.min()),
                    closeness=float(ratio.min()),
                )
            )
            advance(samples_per_cell, f"w={w:g} r={r}")
    seconds = time.perf_counter() - start
    eligible = [c for c in cells if c.n_fit > 0 and c.fit_share >= min_fit_share]
    if not eligible:
        raise nothing_fits_error(cells, sram_budget, flash_budget, min_fit_share)
    best = max(eligible, key=lambda c: c.mean_macs)
    return SpaceResult(cells, best, sram_budget, flash_budget, seconds, len(cells_wr) * samples_per_cell)


def nothing_fits_error(
    cells: list[CellStats], sram_budget: int, flash_budget: int, min_fit_share: float
) -> BudgetError:
    closest = min(cells, key=lambda c: c.closeness)
    min_peak = min(c.min_peak_sram for c in cells)
    min_flash = min(c.min_flash for c in cells)
    share = f" with at least {min_fit_share:.0%} of its samples" if min_fit_share > 0 else ""
    return BudgetError(
        f"space: no (width, resolution) cell has a sampled subnet that fits{share} — SRAM budget {sram_budget} B "
        f"({sram_budget / 1024:.1f} KiB), flash budget {flash_budget} B ({flash_budget / 1024:.1f} KiB). "
        f"Smallest peak SRAM seen: {min_peak} B ({min_peak / 1024:.1f} KiB); smallest flash seen: {min_flash} B "
        f"({min_flash / 1024:.1f} KiB); closest cell: w={closest.width_mult:g}, r={closest.resolution} "
        f"(needs {closest.closeness:.2f}x the budget). Add smaller widths/resolutions to space.widths / "
        "space.resolutions, choose a scheduler with a lower peak (scheduler=patch), or a larger device."
    )


class _progress:
    """A rich progress bar (or nothing) as a context manager yielding `advance(n, description)`."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total
        self._bar: Any = None

    def __enter__(self) -> Callable[[int, str], None]:
        if not self.enabled:
            return lambda n, d: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn("space {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        self._bar.start()
        task = self._bar.add_task("", total=self.total)
        return lambda n, d: self._bar.update(task, advance=n, description=d)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
