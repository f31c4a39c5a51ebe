"""Where a training's time goes: one exclusive timeline of phases, at a few `perf_counter` calls per step.

A `TrainingProfile` is a stopwatch that is always in exactly one phase; switching phase adds the time since the
last switch to the phase it leaves, so the phases sum to the time profiled, with nothing counted twice. The train
stage starts one (`activate`) for the stage; while it is active

- `make_trainer` adds a `ProfileCallback`, which switches from Lightning's hooks: `data` (batch fetch and
  augmentation, from the end of a step to the start of the next), `forward` (the step up to the backward pass: all
  of a sandwich step's subnets, their losses), `backward`, `optimizer` (gradient clipping, the step, per-step
  logging), `eval` during Lightning's validation loop, `other` after each epoch (Lightning's bookkeeping) and
  after the fit;
- code that does a phase's work wraps it in `phase(name)` (`bn_recalib` in `SubnetEvaluator`, `eval` in
  `evaluate_accuracy`, `checkpoint`, `cache`), and `subnet(label)` names the subnet the work is for (the `ofa`
  trainer's per-epoch largest / smallest / random), so recalibration and evaluation are also reported per subnet;
- before the first training step the phase is `setup` (data, space, model, Lightning's start-up).

Without an active profile `phase` and `subnet` are no-ops. Only this process is profiled: a DDP fit in spawned
workers shows as `setup` / `other`. Throughput: `images_per_s` over the training steps (data + forward + backward +
optimizer) and `images_per_s_per_core`, images per second per torch intra-op thread the steps ran with (the
thread count is read at every phase switch, so a job whose share of the cores changes mid-fit is counted right).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch

#: the phases in report order; `STEP_PHASES` make up a training step
STEP_PHASES = ("data", "forward", "backward", "optimizer")
PHASES = ("setup", *STEP_PHASES, "bn_recalib", "eval", "checkpoint", "cache", "other")
#: MLflow metric prefix of the train stage's profile
PREFIX = "train.profile"


class TrainingProfile:
    """An exclusive timeline of phases (seconds per phase, per (phase, subnet)), images and steps."""

    def __init__(self, start_phase: str = "setup", clock: Any = time.perf_counter) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = defaultdict(float)
        self.by_subnet: dict[tuple[str, str], float] = defaultdict(float)
        self.current = start_phase
        self.current_subnet: str | None = None
        self.images = 0
        self.steps = 0
        self.thread_seconds = 0.0  # Σ time in the step phases × the torch threads at the time
        self.started = self._last = clock()
        self.stopped: float | None = None

    # ---- the timeline -------------------------------------------------------------------------------------
    def switch(self, phase: str) -> str:
        """Enter `phase` now; returns the phase left."""
        now = self.clock()
        elapsed = now - self._last
        self.seconds[self.current] += elapsed
        if self.current in STEP_PHASES:
            self.thread_seconds += elapsed * torch.get_num_threads()
        if self.current_subnet is not None and elapsed > 0:
            self.by_subnet[(self.current, self.current_subnet)] += elapsed
        self._last = now
        left, self.current = self.current, phase
        return left

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """`name` inside the block, then back to the phase it interrupted."""
        left = self.switch(name)
        try:
            yield
        finally:
            self.switch(left)

    @contextlib.contextmanager
    def subnet(self, label: str) -> Iterator[None]:
        """Time inside the block is also counted for subnet `label` (per phase)."""
        self.switch(self.current)  # close the segment before the label applies
        before, self.current_subnet = self.current_subnet, label
        try:
            yield
        finally:
            self.switch(self.current)
            self.current_subnet = before

    def count_step(self, images: int) -> None:
        self.steps += 1
        self.images += int(images)

    def stop(self) -> None:
        if self.stopped is None:
            self.switch(self.current)
            self.stopped = self._last

    # ---- figures ------------------------------------------------------------------------------------------
    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())

    @property
    def step_s(self) -> float:
        return sum(self.seconds.get(p, 0.0) for p in STEP_PHASES)

    def images_per_s(self) -> float | None:
        return self.images / self.step_s if self.images and self.step_s > 0 else None

    def images_per_s_per_core(self) -> float | None:
        return self.images / self.thread_seconds if self.images and self.thread_seconds > 0 else None

    def ordered(self) -> list[tuple[str, float]]:
        """(phase, seconds) in report order, phases never entered left out; unknown phases last."""
        known = [(p, self.seconds[p]) for p in PHASES if self.seconds.get(p)]
        return known + [(p, s) for p, s in sorted(self.seconds.items()) if p not in PHASES and s]

    def metrics(self, prefix: str = PREFIX) -> dict[str, float]:
        """`<prefix>.<phase>_s` and `_share` (of the total), `<prefix>.<phase>.<subnet>_s`, `total_s`, `images`,
        `steps`, `images_per_s`, `images_per_s_per_core`, `threads` (mean over the steps)."""
        total = self.total_s
        out: dict[str, float] = {}
        for phase, seconds in self.ordered():
            out[f"{prefix}.{phase}_s"] = seconds
            out[f"{prefix}.{phase}_share"] = seconds / total if total > 0 else 0.0
        for (phase, label), seconds in sorted(self.by_subnet.items()):
            out[f"{prefix}.{phase}.{label}_s"] = seconds
        out[f"{prefix}.total_s"] = total
        out[f"{prefix}.images"] = float(self.images)
        out[f"{prefix}.steps"] = float(self.steps)
        ips, per_core = self.images_per_s(), self.images_per_s_per_core()
        if ips is not None and per_core is not None:
            out[f"{prefix}.images_per_s"] = ips
            out[f"{prefix}.images_per_s_per_core"] = per_core
            out[f"{prefix}.threads"] = ips / per_core
        return out

    def summary(self, label: str = "train profile") -> str:
        """One line: the total, each phase's seconds and share, the throughput."""
        total = self.total_s
        parts = [
            f"{p} {s:.1f} s ({100 * s / total:.0f} %)" if total > 0 else f"{p} {s:.1f} s" for p, s in self.ordered()
        ]
        line = f"{label}: {total:.1f} s = " + ", ".join(parts)
        ips, per_core = self.images_per_s(), self.images_per_s_per_core()
        if ips is not None and per_core is not None:
            line += (
                f"; {self.images:,} images in {self.steps:,} steps: {ips:,.1f} images/s, {per_core:,.1f} per core "
                f"({ips / per_core:.2g} threads)"
            )
        return line


# ---- the active profile (this process) ---------------------------------------------------------------------
_ACTIVE: TrainingProfile | None = None


def active() -> TrainingProfile | None:
    return _ACTIVE


@contextlib.contextmanager
def activate(profile: TrainingProfile | None = None) -> Iterator[TrainingProfile]:
    """Profile the block (a fresh `TrainingProfile` unless given); stopped at the end, the previous one restored."""
    global _ACTIVE
    profile = profile or TrainingProfile()
    before, _ACTIVE = _ACTIVE, profile
    try:
        yield profile
    finally:
        profile.stop()
        _ACTIVE = before


def phase(name: str) -> contextlib.AbstractContextManager[None]:
    """`name` on the active profile's timeline inside the block; nothing without one."""
    return _ACTIVE.phase(name) if _ACTIVE is not None else contextlib.nullcontext()


def enter(name: str) -> None:
    """Switch the active profile to phase `name` (until the next switch); nothing without one."""
    if _ACTIVE is not None:
        _ACTIVE.switch(name)


def subnet(label: str) -> contextlib.AbstractContextManager[None]:
    """Count the block's time for subnet `label` too; nothing without an active profile."""
    return _ACTIVE.subnet(label) if _ACTIVE is not None else contextlib.nullcontext()


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return len(batch)
    if isinstance(batch, list | tuple) and batch:
        return _batch_size(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_size(next(iter(batch.values())))
    return 0


class ProfileCallback(pl.Callback):
    """Switches a `TrainingProfile`'s phase from Lightning's hooks (manual and automatic optimization alike)."""

    def __init__(self, profile: TrainingProfile) -> None:
        super().__init__()
        self.profile = profile
        self._before_validation: list[str] = []

    def _enter(self, phase: str) -> None:
        self.profile.switch(phase)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._enter("data")  # the first batch is fetched after this hook

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, *args: Any) -> None:
        self._enter("forward")

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Any) -> None:
        self._enter("backward")

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._enter("optimizer")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        self._enter("data")
        self.profile.count_step(_batch_size(batch))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._enter("other")  # callbacks run before the module's own epoch end (its evaluation, checkpoint)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._before_validation.append(self.profile.switch("eval"))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._enter(self._before_validation.pop() if self._before_validation else "other")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._enter("other")
