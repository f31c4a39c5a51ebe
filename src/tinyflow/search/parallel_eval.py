"""Subnet measurements spread over the job's share of the cores: one forked process per core, one torch thread each.

Scoring a subnet on the supernet (BatchNorm recalibration, then the val images) is the search's main cost, and on
small CNNs one torch thread per subnet is faster than several (`tinyflow.stages.search.torch_threads`). So a job whose
share of the cores is k measures its predictor pairs k at a time in k forked workers. The workers inherit the
supernet and its resized image tensors (prepared before the fork, so none is built twice) and run one thread each,
as PyTorch's own DataLoader workers do (`tinyflow.forked`); the arithmetic is the parent's, so the accuracies are the
same numbers a sequential pass gives. Where `fork` is not available, or the share is one core, the pass is sequential.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from tinyflow.arch.genome import Arch
from tinyflow.forked import can_fork, fork_map

log = logging.getLogger(__name__)


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
    done = progress or (lambda n: None)
    # adjacent subnets share their first blocks (the evaluator's path cache); each worker takes consecutive runs
    todo = supernet.sharing_order([a for a in archs if not supernet.is_evaluated(a, split, max_images)])
    forked = can_fork(workers, len(todo))
    if forked:
        for resolution in sorted({a.resolution for a in todo}):  # built once here, inherited by every worker
            supernet.evaluator.prepare(split, resolution)
    chunk = max(1, len(todo) // (8 * max(1, workers)))  # a few hand-outs per worker: runs kept, load balanced
    scores = fork_map(lambda i: float(supernet.evaluate(todo[i], split, max_images)), len(todo), workers, chunk)
    for arch, acc in zip(todo, scores):
        supernet.remember(arch, split, max_images, acc)
        done(1)
    if forked:
        log.info(
            "search: %d subnets measured by %d worker processes (one thread each)", len(todo), min(workers, len(todo))
        )
    measured = {a.key() for a in todo}
    out = []
    for arch in archs:  # in order, from the cache now
        out.append(supernet.evaluate(arch, split, max_images))
        if arch.key() not in measured:
            done(1)
    return out
