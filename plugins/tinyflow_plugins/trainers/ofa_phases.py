"""Progressive-shrinking phases of the `ofa` trainer: parsed from config, checked against the space, and an epoch
budget spread over them."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from tinyflow.arch.space import MBConvSpace
from tinyflow.errors import ConfigError


@dataclass
class Phase:
    """One progressive-shrinking phase. A choice list of null means all of the space's choices."""

    name: str
    epochs: int
    lr: float
    random_subnets: int = 0  # subnets sampled per step besides the largest and the smallest
    kernel: list[int] | None = None
    depth: list[int] | None = None
    expand: list[int] | None = None
    sort_channels: bool = False  # re-sort hidden channels by importance when the phase starts (expand phase)
    # progressive resizing: the phase's steps see the images at the subnet's resolution x this, rounded to a
    # multiple of 8 (the per-epoch figures and every later stage keep the full resolution)
    resolution_scale: float = 1.0

    def subspace(self, space: MBConvSpace) -> MBConvSpace:
        return replace(
            space,
            kernel_choices=tuple(self.kernel or space.kernel_choices),
            depth_choices=tuple(self.depth or space.depth_choices),
            expand_choices=tuple(self.expand or space.expand_choices),
        )

    def step_resolution(self, resolution: int) -> int:
        """The resolution this phase trains a subnet of `resolution` at (`resolution_scale`, a multiple of 8)."""
        if self.resolution_scale == 1.0:
            return resolution
        return max(8, 8 * round(resolution * self.resolution_scale / 8))


def parse_phases(phases: Any, space: MBConvSpace) -> list[Phase]:
    """Phases from config, checked against the space; ConfigError naming the phase and field."""
    out: list[Phase] = []
    known = set(Phase.__dataclass_fields__)
    for i, raw in enumerate(phases or []):
        raw = dict(raw)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"trainer.phases[{i}]: unknown key(s) {unknown}; known: {sorted(known)}")
        try:
            phase = Phase(**raw)
        except TypeError as exc:
            raise ConfigError(f"trainer.phases[{i}]: {exc}") from None
        if phase.epochs < 0 or phase.lr <= 0 or phase.random_subnets < 0:
            raise ConfigError(
                f"trainer.phases[{i}] ({phase.name}): epochs and random_subnets must be >= 0 and lr > 0, got "
                f"epochs={phase.epochs}, lr={phase.lr}, random_subnets={phase.random_subnets}"
            )
        if not 0 < phase.resolution_scale <= 1:
            raise ConfigError(
                f"trainer.phases[{i}].resolution_scale ({phase.name}) = {phase.resolution_scale}: give a factor in "
                "(0, 1] (1 = the subnet's own resolution)"
            )
        for fname, allowed in (
            ("kernel", space.kernel_choices),
            ("depth", space.depth_choices),
            ("expand", space.expand_choices),
        ):
            bad = [v for v in (getattr(phase, fname) or []) if v not in allowed]
            if bad:
                raise ConfigError(
                    f"trainer.phases[{i}].{fname} ({phase.name}) = {getattr(phase, fname)}: {bad} not in the "
                    f"space's choices {list(allowed)}"
                )
        out.append(phase)
    if not out or sum(p.epochs for p in out) == 0:
        raise ConfigError("trainer.phases: give at least one phase with epochs > 0")
    return out


def scale_epochs(phases: list[Phase], total: int | None) -> list[Phase]:
    """Spread a total epoch budget (`trainer.epochs`, the same key as the standalone trainer's) over the phases in
    proportion to their configured epochs, at least one each; null keeps the phases' own epochs."""
    if total is None:
        return phases
    active = [p for p in phases if p.epochs > 0]
    if total < len(active):
        raise ConfigError(
            f"trainer.epochs = {total} is fewer than the {len(active)} phases with epochs; give at least "
            f"{len(active)}, or null to use each phase's own epochs"
        )
    configured = sum(p.epochs for p in active)
    share = {id(p): p.epochs * total / configured for p in active}
    alloc = {id(p): max(1, math.floor(share[id(p)])) for p in active}
    while sum(alloc.values()) > total:
        big = max((p for p in active if alloc[id(p)] > 1), key=lambda p: alloc[id(p)] - share[id(p)])
        alloc[id(big)] -= 1
    while sum(alloc.values()) < total:
        short = max(active, key=lambda p: share[id(p)] - alloc[id(p)])
        alloc[id(short)] += 1
    return [replace(p, epochs=alloc.get(id(p), 0)) for p in phases]
