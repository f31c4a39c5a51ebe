"""A training budget in compute, not epochs: `trainer.epochs_at_resolution`.

The configured epochs are the budget at resolution `r` (`epochs_at_resolution: r`). An epoch's compute grows with
the pixels of its images, so at a larger input resolution `R` (the one the `space` stage chose) the trainer runs

    epochs × (r / R)²   rounded half up, at least `minimum` (one per progressive-shrinking phase)

— the same images × pixels as the configured epochs at `r` — and at `R <= r` the configured epochs. With elastic
resolution (one of several resolutions drawn per batch) `R²` is the mean of their squares. `null` trains the
configured epochs at any resolution. The budget only ever lowers the epochs: a job at a smaller resolution than `r`
is not made longer than it was.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tinyflow.errors import ConfigError


@dataclass(frozen=True)
class EpochBudget:
    """The epochs a training runs and why."""

    configured: int  # the epochs the config gives (all phases together)
    effective: int  # the epochs trained
    resolution: float  # the root mean square of the resolutions trained at (the one resolution, usually)
    at_resolution: int | None  # trainer.epochs_at_resolution

    @property
    def scaled(self) -> bool:
        return self.effective != self.configured

    @property
    def reason(self) -> str:
        res = f"r{self.resolution:g}"
        if self.at_resolution is None:
            return f"trainer.epochs_at_resolution=null: the configured {self.configured} epochs at {res}"
        if not self.scaled:
            if self.resolution <= self.at_resolution:
                return (
                    f"{res} <= r{self.at_resolution} (trainer.epochs_at_resolution): the configured "
                    f"{self.configured} epochs"
                )
            return (
                f"{res} > r{self.at_resolution} (trainer.epochs_at_resolution): {self.configured} x "
                f"({self.at_resolution}/{self.resolution:g})^2 = {self.exact:.2f}, at least {self.effective}: "
                f"{self.effective} epochs"
            )
        return (
            f"the compute of {self.configured} epochs at r{self.at_resolution} (trainer.epochs_at_resolution) at "
            f"{res}: {self.configured} x ({self.at_resolution}/{self.resolution:g})^2 = {self.exact:.2f} -> "
            f"{self.effective} epochs"
        )

    @property
    def exact(self) -> float:
        if self.at_resolution is None or self.resolution <= self.at_resolution:
            return float(self.configured)
        return self.configured * (self.at_resolution / self.resolution) ** 2

    def metrics(self, prefix: str = "train") -> dict[str, float]:
        out = {
            f"{prefix}.epochs_configured": float(self.configured),
            f"{prefix}.epochs_effective": float(self.effective),
        }
        if self.at_resolution is not None:
            out[f"{prefix}.epochs_at_resolution"] = float(self.at_resolution)
        return out


def epoch_budget(
    epochs: int, at_resolution: int | None, resolutions: Sequence[int] | int, minimum: int = 1
) -> EpochBudget:
    """The epochs to train at `resolutions` (one, or the elastic choices drawn uniformly) when `epochs` are the
    budget at `at_resolution` (module docstring); never more than `epochs`, never fewer than `minimum`."""
    if at_resolution is not None and (isinstance(at_resolution, bool) or int(at_resolution) < 1):
        raise ConfigError(
            f"trainer.epochs_at_resolution must be a resolution >= 1 (the epochs are budgeted at it) or null, got "
            f"{at_resolution!r}"
        )
    rs = [int(resolutions)] if isinstance(resolutions, int) else [int(r) for r in resolutions]
    if not rs:
        raise ConfigError("epoch_budget: no resolution to train at")
    rms = (sum(r * r for r in rs) / len(rs)) ** 0.5
    at = None if at_resolution is None else int(at_resolution)
    effective = int(epochs)
    if at is not None and rms > at:
        effective = min(int(epochs), max(int(minimum), math.floor(epochs * (at / rms) ** 2 + 0.5)))
    return EpochBudget(configured=int(epochs), effective=effective, resolution=round(rms, 2), at_resolution=at)
