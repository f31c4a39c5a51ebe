"""Hydra callbacks: let the tracker prepare its store once, before any job of a run or sweep starts."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class EnsureTrackingStore(Callback):
    """Parallel jobs (joblib launcher) must not race on creating a shared store (MLflow: the sqlite schema and the
    experiment): the configured tracker's `prepare()` runs once in the launching process."""

    def _ensure(self, config: DictConfig) -> None:
        node = config.get("tracking")
        if node is None or "_target_" not in node:
            return
        from tinyflow.plugins import build_plugin

        build_plugin(config, "tracking").prepare()

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._ensure(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._ensure(config)
