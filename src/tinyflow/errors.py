"""Errors that reach the user as one clear paragraph (no traceback unless HYDRA_FULL_ERROR=1).

Besides the user's own mistakes (`TinyflowError` and its kinds), the machine can fail a job: a read-only folder, a
full disk, a store that cannot be written. `environment_problem` recognises those in any exception chain (an
`OSError` with its errno, or a database error's message) and words them as a paragraph naming the path
(docs/design.md §13). A signal ends a job with `JobInterrupted`, which is not an `Exception`, so no `except
Exception` on the way swallows it.
"""

from __future__ import annotations

import errno
import signal


class TinyflowError(Exception):
    """A problem the user can fix: the message names the field or input and the fix."""


class ConfigError(TinyflowError):
    """A config value is invalid."""


class DataError(TinyflowError):
    """A dataset is missing or malformed."""


class BudgetError(TinyflowError):
    """Nothing fits the device's SRAM / flash budget."""


class CheckpointError(TinyflowError):
    """A checkpoint is missing, corrupt or from another arch."""


class EnvironmentProblem(TinyflowError):
    """The machine, not the config: a folder or store that cannot be written, a full disk."""


class JobInterrupted(BaseException):
    """The job received SIGTERM or SIGINT; it exits with 128 + the signal's number after closing its runs."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
#: what sqlite (through SQLAlchemy and MLflow) says when the machine, not the store's content, is at fault
_DB_MESSAGES = {
    "readonly database": "cannot be written (a read-only file or file system)",
    "disk is full": "cannot grow: the disk is full",
    "unable to open database file": "cannot be opened or created (its folder is missing, read-only or not a folder)",
    "disk i/o error": "hit a disk I/O error",
}


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in seen:
        seen.append(node)
        node = node.__cause__ or node.__context__
    return seen


def environment_problem(exc: BaseException, store: str | None = None) -> EnvironmentProblem | None:
    """An `EnvironmentProblem` describing `exc` (or an exception it was raised from) when the machine is at fault:
    a read-only / missing folder or full disk (`OSError` errno), or a database that cannot be written. `store` names
    the database for messages that do not. None for anything else."""
    for node in _chain(exc):
        if isinstance(node, EnvironmentProblem):
            return node
        if isinstance(node, OSError) and node.errno is not None:
            path = node.filename if node.filename is not None else "?"
            reason = node.strerror or str(node)
            if node.errno in _FULL:
                return EnvironmentProblem(
                    f"{path}: no space left to write it ({reason}). Free space on that disk, or point the output "
                    "somewhere else (`hydra.run.dir=...`, `cache.dir=...`, `tracking.uri=...`), then run again."
                )
            if node.errno in _READ_ONLY:
                return EnvironmentProblem(
                    f"{path}: cannot be written ({reason}). The folder or file system is read-only or not yours; "
                    "make it writable or point the output somewhere else (`hydra.run.dir=...`, `cache.dir=...`, "
                    "`tracking.uri=...`)."
                )
            if node.errno in (errno.ENOTDIR, errno.EEXIST) and node.filename is not None:
                return EnvironmentProblem(
                    f"{path}: a part of this path is a file, not a folder ({reason}). Choose a folder path "
                    "(`hydra.run.dir=...`, `cache.dir=...`, `tracking.uri=...`)."
                )
    text = " ".join(str(node) for node in _chain(exc)).lower()
    for needle, what in _DB_MESSAGES.items():
        if needle in text:
            where = f"the tracking store {store}" if store else "a database"
            return EnvironmentProblem(
                f"{where} {what}. Make it writable (or free space), or track elsewhere with "
                "`tracking.uri=sqlite:///<writable folder>/mlflow.db` (or `tracking=none`)."
            )
    return None
