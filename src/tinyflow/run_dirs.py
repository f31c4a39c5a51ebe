"""Run folder names that never collide: `hydra.run.dir` is `runs/<second>_<run id>` (docs/design.md §12).

Two jobs started in the same second used to share `runs/<second>/` — one interleaved log, every file overwritten by
whichever finished last. The run id adds this process's pid (unique among the processes running on a host at one
time) and random hex (different hosts writing one `outputs/`). It is fixed for the life of the process, and the
`tf_run_id` resolver is cached in the config, so every resolution of `hydra.run.dir` in a job agrees.
"""

from __future__ import annotations

import os
import secrets
from functools import cache


@cache
def run_id() -> str:
    """`<pid>-<4 hex>`, the same for every call in this process."""
    return f"{os.getpid()}-{secrets.token_hex(2)}"
