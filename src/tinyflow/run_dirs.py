"""Run folder names that never collide: `hydra.run.dir` is `runs/<second>_<run id>` (docs/design.md §12).

Two jobs started in the same second used to share `runs/<second>/` — one interleaved log, every file overwritten by
whichever finished last. The run id adds this process's pid (unique among the processes running on a host at one
time) and random hex (different hosts writing one `outputs/`). It is fixed for the life of the process, and the
`tf_run_id` resolver is cached in the config, so every resolution of `hydra.run.dir` in a job agrees.
`CheckRunDir` reports a run folder that cannot be made (read-only, full, under a file) as one paragraph.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


@cache
def run_id() -> str:
    """`<pid>-<4 hex>`, the same for every call in this process."""
    return f"{os.getpid()}-{secrets.token_hex(2)}"


class CheckRunDir(Callback):
    """Hydra callback: before Hydra makes the run (or sweep) folder, check it can be made and written; if not, one
    paragraph naming the folder and exit code 1 — not Hydra's traceback from inside its own `mkdir`."""

    def _check(self, folder: str) -> None:
        path = Path(folder)
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path) as probe:  # one byte: a full disk still creates empty files
                probe.write(b"x")
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as exc:
            from tinyflow.console import error_paragraph
            from tinyflow.errors import environment_problem

            if exc.filename is None:
                exc.filename = str(path)
            problem = environment_problem(exc)
            error_paragraph(str(problem) if problem else f"{path}: cannot create the run folder ({exc}).")
            sys.exit(1)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(str(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(str(config.hydra.sweep.dir))
