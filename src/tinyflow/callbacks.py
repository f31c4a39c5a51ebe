"""Hydra callbacks: create the MLflow store and experiment once, before any job of a run or sweep starts."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class EnsureTrackingStore(Callback):
    """Parallel jobs (joblib launcher) must not race on creating the sqlite schema or the experiment."""

    def _ensure(self, config: DictConfig) -> None:
        node = config.get("tracking")
        if node is None or not str(node.get("_target_", "")).endswith("MlflowTracker"):
            return
        from tinyflow.tracking import ensure_store, resolve_uri

        ensure_store(resolve_uri(node.get("uri")), node.get("experiment", "tinyflow"))

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._ensure(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._ensure(config)
