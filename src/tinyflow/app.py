"""Shared entry-point plumbing for tinyflow's Hydra apps: clean errors, signals, exit codes (docs/design.md §13)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from tinyflow import console
from tinyflow.errors import JobInterrupted, TinyflowError, environment_problem
from tinyflow.validation import refuse_non_finite

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


#: written into a multirun job's folder when it fails: what `tinyflow.sweep` reads to set the sweep's exit code
JOB_FAILED_FILE = "job_failed.json"


def _record_failure(exc: BaseException) -> None:
    """In a multirun, leave `job_failed.json` (the error's kind, whether it was "nothing fits", the message) in the
    job's folder, so the launching process can tell a failed job after the sweep."""
    from tinyflow.errors import BudgetError

    try:
        folder = HydraConfig.get().runtime.output_dir
        record = {"error_type": type(exc).__name__, "nothing_fits": isinstance(exc, BudgetError), "error": str(exc)}
        with open(os.path.join(folder, JOB_FAILED_FILE), "w") as handle:
            json.dump(record, handle, indent=2)
    except (ValueError, KeyError, OSError) as problem:  # no Hydra job, or a folder that cannot be written
        log.warning("could not record the job's failure for the sweep: %s", problem)


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise JobInterrupted(signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGINT raise `JobInterrupted` inside the block (main thread only), so every `with` on the way out
    runs — the tracker closes its runs FAILED with the signal as the reason — and the job exits 128 + signal.

    Lightning adds its own SIGTERM notifier in front of this handler and calls it too; without it, Lightning turns
    SIGTERM into a `SystemExit` with code 0 and SIGINT into exit code 1, both without a reason."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def refuse_code_arguments(argv: list[str] | None = None) -> None:
    """Before Hydra parses the command line (it instantiates callbacks first): refuse overrides that choose code
    (`_target_`, `_args_`, ..., `hydra.callbacks`) with one paragraph and exit code 2."""
    from tinyflow.errors import ConfigError
    from tinyflow.plugins import refuse_code_overrides

    args = sys.argv[1:] if argv is None else argv
    try:
        refuse_code_overrides(a for a in args if "=" in a and not a.startswith("-"))
    except ConfigError as exc:
        console.error_paragraph(str(exc))
        sys.exit(2)


def _lightning_sigterm(exc: SystemExit) -> bool:
    return type(exc).__name__ == "SIGTERMException"


def clean_errors(fn: Callable[..., Any] | None = None, *, finite_config: bool = True) -> Any:
    """Turn any error in a Hydra task into one clear paragraph and a non-zero exit.

    With `finite_config` (the default) the task's config is first refused, as a `ConfigError` listing the fields,
    when a number in it is NaN or infinite (`validation.refuse_non_finite`); the pipeline turns this off because it
    checks inside its MLflow job, so the run is FAILED with the list.

    A TinyflowError is the user's to fix, so its message is all they see; so is a failure of the machine (a
    read-only folder or store, a full disk: `environment_problem`). Anything else is a bug: the traceback goes to
    the job log (and to the screen with HYDRA_FULL_ERROR=1). SIGTERM / SIGINT end the job with exit code
    128 + signal. In a multirun a failed job is reported failed and the sweep goes on with the other jobs.
    """

    if fn is None:
        return functools.partial(clean_errors, finite_config=finite_config)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with signals_raise():
                if finite_config and args:
                    refuse_non_finite(args[0])
                return fn(*args, **kwargs)
        except JobInterrupted as exc:
            _log_to_file(exc)
            console.error_paragraph(
                f"{exc}: the job stopped. Finished stages and the last training checkpoint are kept; continue with "
                "`resume=last` (or `resume=<this run's folder>`)."
            )
            sys.exit(exc.exit_code)
        except SystemExit as exc:
            if _lightning_sigterm(exc):  # Lightning saw SIGTERM before our handler was installed
                sys.exit(128 + signal.SIGTERM)
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            _log_to_file(exc)
            where = _job_log_file()
            problem = None if isinstance(exc, TinyflowError) else environment_problem(exc)
            if isinstance(exc, TinyflowError):
                console.error_paragraph(str(exc))
            elif problem is not None:
                console.error_paragraph(str(problem))
            else:
                console.error_paragraph(
                    f"{type(exc).__name__}: {exc}",
                    where=f"This looks like a bug in tinyflow. The traceback is in {where}; "
                    "set HYDRA_FULL_ERROR=1 to see it here.",
                )
            if _is_multirun():
                _record_failure(exc)
                return {"status": "FAILED", "error": str(exc)}
            sys.exit(1)

    return wrapper
