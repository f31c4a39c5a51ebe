"""Hydra callbacks: before any job of a run or sweep starts, check where it will write and let the tracker prepare
its store once.

Hydra turns an exception in a callback into a warning and starts the job anyway, so a problem found here is printed
as one paragraph and ends the process with exit code 1 (a `SystemExit` passes through Hydra's callback loop).
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tinyflow.errors import TinyflowError


def _stop(exc: TinyflowError) -> None:
    """Print the paragraph and exit 1: the job has not started, so there is no run to mark FAILED."""
    from tinyflow.console import error_paragraph

    error_paragraph(str(exc))
    sys.exit(1)


class EnsureTrackingStore(Callback):
    """Parallel jobs (joblib launcher) must not race on creating a shared store (MLflow: the sqlite schema and the
    experiment): the configured tracker's `prepare()` runs once in the launching process. It checks the store first
    (`tracking.check_store`: an unreachable server fails in seconds, not after MLflow's minutes of retries).

    The run (or sweep) folder is checked before it (`run_dirs.CheckRunDir`), so every app that names this callback —
    `tinyflow.analyze` and `tinyflow.firmware` too — reports an unusable `hydra.run.dir` as one paragraph rather than
    Hydra's traceback from its own `mkdir`."""

    def _ensure(self, config: DictConfig) -> None:
        node = config.get("tracking")
        if node is None or "_target_" not in node:
            return
        from tinyflow.plugins import build_plugin

        try:
            build_plugin(config, "tracking").prepare()
        except TinyflowError as exc:
            _stop(exc)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from tinyflow.run_dirs import CheckRunDir

        CheckRunDir().on_run_start(config)
        self._ensure(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from tinyflow.run_dirs import CheckRunDir

        CheckRunDir().on_multirun_start(config)
        self._ensure(config)
