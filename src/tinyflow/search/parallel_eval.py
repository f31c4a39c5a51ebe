"""Subnet measurements spread over the job's share of the cores: one forked process per core, one torch thread each.

Scoring a subnet on the supernet (BatchNorm recalibration, then the val images) is the search's main cost, and on
small CNNs one torch thread per subnet is faster than several (`tinyflow.stages.search.torch_threads`). So a job whose
share of the cores is k measures its predictor pairs k at a time in k forked workers. The workers inherit the
supernet and its resized image tensors (prepared before the fork, so none is built twice) and run one thread each,
as PyTorch's own DataLoader workers do; the arithmetic is the parent's, so the accuracies are the same numbers a
sequential pass gives. Where `fork` is not available, or the share is one core, the pass is sequential.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

from tinyflow.arch.genome import Arch

log = logging.getLogger(__name__)

_supernet: Any = None  # the workers' supernet, inherited at fork (set only while a pool runs)


def _start_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _score(job: tuple[Arch, str, int | None]) -> float:
    arch, split, max_images = job
    return float(_supernet.evaluate(arch, split, max_images))


def measure_many(
    supernet: Any,
    archs: Sequence[Arch],
    split: str = "val",
    max_images: int | None = None,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """The accuracy of each of `archs` on `split` (its first `max_images`), measured by `workers` processes; the
    results are kept in `supernet`'s own cache as `Supernet.evaluate` keeps them."""
    global _supernet
    done = progress or (lambda n: None)
    todo = [a for a in archs if not supernet.is_evaluated(a, split, max_images)]
    n_workers = min(int(workers), len(todo))
    if n_workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        for resolution in sorted({a.resolution for a in todo}):  # built once here, inherited by every worker
            supernet.evaluator.calibration_batches(resolution)
            supernet.evaluator.eval_batches(split, resolution)
        _supernet = supernet
        try:
            with multiprocessing.get_context("fork").Pool(n_workers, initializer=_start_worker) as pool:
                jobs = [(a, split, max_images) for a in todo]
                for arch, acc in zip(todo, pool.imap(_score, jobs, chunksize=1)):
                    supernet.remember(arch, split, max_images, acc)
                    done(1)
        finally:
            _supernet = None
        log.info("search: %d subnets measured by %d worker processes (one thread each)", len(todo), n_workers)
        ticked = {a.key() for a in todo}
    else:
        ticked = set()
    out = []
    for arch in archs:  # what no worker measured (a sequential pass, or the cache), in order
        out.append(supernet.evaluate(arch, split, max_images))
        if arch.key() not in ticked:
            done(1)
    return out
