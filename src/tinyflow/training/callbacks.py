"""Lightning callbacks that report to tinyflow's tracker (MLflow child run of the running stage)."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch


class TrackerCallback(pl.Callback):
    """At the end of every training epoch, log Lightning's epoch metrics (train and val) to `tracker`.

    Metrics are logged with `step = epoch + step_offset` under `prefix` (e.g. `"phase_kernel/"`), plus the
    learning rate and the epoch's wall time. Sanity-check validation is never logged.
    """

    def __init__(self, tracker: Any, prefix: str = "", step_offset: int = 0):
        super().__init__()
        self.tracker = tracker
        self.prefix = prefix
        self.step_offset = step_offset
        self.history: list[dict[str, float]] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {f"{self.prefix}{k}": _scalar(v) for k, v in trainer.callback_metrics.items()}
        metrics = {k: v for k, v in metrics.items() if v is not None}
        if trainer.optimizers:
            metrics[f"{self.prefix}lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        metrics[f"{self.prefix}epoch_time_s"] = time.perf_counter() - self._t0
        if trainer.is_global_zero:
            self.tracker.log_metrics(metrics, step=trainer.current_epoch + self.step_offset)
        self.history.append({"epoch": float(trainer.current_epoch + self.step_offset), **metrics})


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value.detach()) if value.numel() == 1 else None
    if isinstance(value, int | float):
        return float(value)
    return None
