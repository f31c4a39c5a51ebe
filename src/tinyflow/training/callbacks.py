"""Lightning callbacks: `TrackerCallback` reports to tinyflow's tracker (MLflow child run of the running stage);
`RngStateCallback` puts the random generators' state into every checkpoint and restores it on resume."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


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


#: one entry per resumed fit in this process: whether the checkpoint's generator state was restored (the train
#: stage does not cache a training resumed without it: its numbers may differ from an uninterrupted one)
RESUMES: list[bool] = []


class RngStateCallback(pl.Callback):
    """The state of Python's, NumPy's and torch's generators, saved with every checkpoint (as plain lists and
    tensors, so `weights_only=True` reads it) and restored when a training resumes from it.

    A checkpoint is written at the end of an epoch; everything random after it (the next epoch's shuffle, dropout,
    augmentation, subnet sampling) then draws the same numbers as in a run that was never interrupted, so a resumed
    training ends with the same weights. `restored` says whether the last resume found a state to restore.
    """

    def __init__(self) -> None:
        super().__init__()
        self.restored: bool | None = None  # None: not resumed

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        version, internal, gauss = random.getstate()
        return {
            "python": {"version": version, "state": list(internal), "gauss": gauss},
            "numpy": {
                "name": str(name),
                "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached": float(cached),
            },
            "torch": torch.get_rng_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        try:
            py, nps = state_dict["python"], state_dict["numpy"]
            random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss"]))
            keys = nps["keys"].numpy().astype(np.uint32)
            np.random.set_state((nps["name"], keys, int(nps["pos"]), int(nps["has_gauss"]), float(nps["cached"])))
            torch.set_rng_state(state_dict["torch"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            log.warning("resume: the checkpoint's random-generator state is unusable (%s); numbers will differ", exc)
            self.restored = False
            return
        self.restored = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path:
            if self.restored is None:  # resumed from a checkpoint without our state (load_state_dict never ran)
                log.warning("resume: %s holds no random-generator state; numbers will differ", trainer.ckpt_path)
                self.restored = False
            RESUMES.append(bool(self.restored))
