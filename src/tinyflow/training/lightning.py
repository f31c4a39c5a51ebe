"""A `pytorch_lightning.Trainer` with tinyflow's defaults, shared by every trainer."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from tinyflow.training.callbacks import RngStateCallback
from tinyflow.training.checkpoint import AtomicCheckpointIO
from tinyflow.training.profile import ProfileCallback, active


def make_trainer(
    max_epochs: int,
    default_root_dir: str,
    callbacks: list[pl.Callback] | None = None,
    **overrides: Any,
) -> pl.Trainer:
    """CPU, progress bar on, no Lightning logger (metrics go to the tracker through `TrackerCallback`), atomic
    checkpoint writes read back with `weights_only=True`, the random generators' state in every checkpoint
    (`RngStateCallback`: a resumed training draws what an uninterrupted one would), no sanity validation, and
    while a training profile is active (the train stage) its `ProfileCallback`. `overrides` win (e.g.
    `strategy="ddp", devices=2`)."""
    profile = active()
    extra: list[pl.Callback] = [RngStateCallback()] + ([ProfileCallback(profile)] if profile is not None else [])
    kwargs: dict[str, Any] = {
        "max_epochs": max_epochs,
        "default_root_dir": default_root_dir,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": True,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
        "deterministic": True,
        "plugins": [AtomicCheckpointIO()],
        "callbacks": [*list(callbacks or []), *extra],
    }
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return pl.Trainer(**kwargs)


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (and dataloader workers) the Lightning way, quietly."""
    pl.seed_everything(int(seed), workers=True, verbose=False)
