"""Shared entry-point plumbing for tinyflow's Hydra apps: clean errors, exit codes."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from tinyflow import console
from tinyflow.errors import TinyflowError

log = logging.getLogger("tinyflow")


def _is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _job_log_file() -> str | None:
    try:
        hc = HydraConfig.get()
        return os.path.join(hc.runtime.output_dir, f"{hc.job.name}.log")
    except (ValueError, KeyError):
        return None


def _log_to_file(exc: BaseException) -> None:
    """Write the error (with its traceback) to the job log file only; the console gets the paragraph."""
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, "failed: %s", (exc,), (type(exc), exc, exc.__traceback__)
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn any error in a Hydra task into one clear paragraph and a non-zero exit.

    A TinyflowError is the user's to fix, so its message is all they see. Anything else is a bug: the
    traceback goes to the job log (and to the screen with HYDRA_FULL_ERROR=1). In a multirun the job is
    reported failed and the sweep goes on with the other jobs.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            _log_to_file(exc)
            where = _job_log_file()
            if isinstance(exc, TinyflowError):
                console.error_paragraph(str(exc))
            else:
                console.error_paragraph(
                    f"{type(exc).__name__}: {exc}",
                    where=f"This looks like a bug in tinyflow. The traceback is in {where}; "
                    "set HYDRA_FULL_ERROR=1 to see it here.",
                )
            if _is_multirun():
                return {"status": "FAILED", "error": str(exc)}
            sys.exit(1)

    return wrapper
