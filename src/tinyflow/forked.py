"""Independent jobs on forked worker processes, one torch thread each, results in order.

The search has two kinds of work that split into independent pieces and that one torch thread does fastest on small
tensors: scoring subnets on the supernet (`tinyflow.search.parallel_eval`) and fitting the predictor's cross-validation
models (`tinyflow.search.predictor`). A job whose share of the cores is k runs them k at a time in k forked
workers. Forked workers inherit what the parent built (the supernet, its resized image tensors, the encoded pairs),
so nothing is pickled but the job's index and its result; the arithmetic is the parent's on one thread, so the
results are the numbers a sequential pass on one thread gives. Where `fork` is not available, or k is 1, the jobs run
here, one after the other.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator
from typing import Any

_task: Callable[[int], Any] | None = None  # the workers' job, inherited at fork (set only while a pool runs)


def _start_worker() -> None:
    import torch

    torch.set_num_threads(1)
    # the job's own handlers (tinyflow.app: SIGTERM/SIGINT raise JobInterrupted) are not the worker's: the pool ends
    # its workers with SIGTERM, which must end them quietly, and Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(index: int) -> Any:
    assert _task is not None
    return _task(index)


def can_fork(workers: int, jobs: int) -> bool:
    """Whether `fork_map` would use worker processes for `jobs` jobs on `workers` workers."""
    return min(int(workers), int(jobs)) > 1 and "fork" in multiprocessing.get_all_start_methods()


def fork_map(task: Callable[[int], Any], jobs: int, workers: int, chunk: int = 1) -> Iterator[Any]:
    """`task(0)`, …, `task(jobs - 1)` in order, computed by up to `workers` forked processes of one torch thread
    each (here, in turn, when `can_fork` says no), handed out `chunk` consecutive jobs at a time. `task`'s results
    must pickle; `task` itself need not."""
    global _task
    if not can_fork(workers, jobs):
        for i in range(jobs):
            yield task(i)
        return
    _task = task
    try:
        with multiprocessing.get_context("fork").Pool(min(int(workers), jobs), initializer=_start_worker) as pool:
            yield from pool.imap(_run, range(jobs), chunksize=max(1, int(chunk)))
    finally:
        _task = None
