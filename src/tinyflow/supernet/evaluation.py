"""Accuracy of a subnet of an elastic supernet, after BatchNorm recalibration at the subnet's resolution.

Used while the supernet trains (the trainer's per-epoch figures) and after (`tinyflow.supernet.Supernet`), so both
measure the same way: the same un-augmented train images per resolution, running statistics re-estimated, then
the split evaluated at the arch's resolution.

A trained supernet (`cache_prefix`: the search's measurements) runs the layers every subnet shares — stem, RNNPool,
fixed first block — once per resolution: their BatchNorms see the same calibration images whatever the subnet, so
their recalibrated statistics, their outputs during recalibration and their outputs on the split are the same for
every subnet, computed by the same operations. Each subnet then recalibrates and runs only its own layers on those
cached outputs: the same numbers, without the stem's full-resolution convolutions (13 % of a subnet's measurement
at the default setting).

The same holds block by block: a block's recalibrated statistics and outputs depend only on the blocks before it,
so two subnets whose first n elastic blocks agree (stage, slot, kernel, expand: `ElasticSupernet.path_of`)
share them. The evaluator keeps the last subnet's path — each block's outputs during recalibration, its outputs on
the split and its recalibrated statistics — and a subnet runs only the blocks after the longest common start of its
path with that one; `measure_many` orders the subnets so that shared starts are adjacent. At the default setting the
first two blocks of stage 1, on the largest maps, were 44 % of a subnet's measurement (121 and 85 ms of 461 ms, one
thread), and 200 random subnets hold only 9 first blocks and about 74 first pairs. Blocks are kept while the ones
before them hold less than `PATH_CACHE_BYTES` of outputs; the later ones run as the subnet's own. The statistics
left behind are those of a full pass (the shared blocks' are put back), the accuracies the same to the bit
(`tests/test_supernet.py`).
While the supernet trains its weights move between measurements, so nothing is cached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from tinyflow.arch.genome import Arch
from tinyflow.errors import ConfigError
from tinyflow.nn.calibration import batchnorms_of, recalibrate_bn
from tinyflow.nn.elastic import ElasticSupernet
from tinyflow.training.profile import phase

SPLITS = ("train", "val", "test")
# the path cache's outputs per process: a block is kept while the blocks before it hold less (the largest subnet's
# whole path on 2,000 val images: 136 MiB at the default job's r48, 242 MiB at r64; at ImageNet resolutions the first
# blocks alone fill it, and they are where the saving is)
PATH_CACHE_BYTES = 512 * 2**20


class SubnetEvaluator:
    """Accuracy of a subnet of the supernet on a split, after BatchNorm recalibration on a few train batches."""

    def __init__(
        self, supernet: ElasticSupernet, data: Any, recalib_batches: int, seed: int, cache_prefix: bool = False
    ):
        self.supernet = supernet
        self.cache_prefix = cache_prefix
        self.data = data
        self.recalib_batches = max(1, int(recalib_batches))
        self.seed = seed
        self.base_resolution = supernet.space.resolution
        self._calib: dict[int, list[torch.Tensor]] = {}
        self._eval: dict[tuple[str, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._prefix_calib: dict[int, list[torch.Tensor]] = {}
        self._prefix_eval: dict[tuple[str, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._path: list[_PathBlock] = []  # the last subnet's elastic blocks, in order (`cache_prefix`)
        self.path_cache_bytes = PATH_CACHE_BYTES
        self._path_of: tuple[str, int, int | None] | None = None  # the (split, resolution, max_images) they hold

    def calibration_batches(self, resolution: int) -> list[torch.Tensor]:
        """The same train images every time, cached per resolution: un-augmented (like the images evaluated), from
        the data module's `calibration_batch`."""
        if resolution not in self._calib:
            with torch.random.fork_rng(), data_resolution(self.data, resolution, self.base_resolution):
                torch.manual_seed(self.seed)
                batch_size = int(getattr(self.data, "batch_size", 128))
                images = self.data.calibration_batch(self.recalib_batches * batch_size, split="train")
                batches = list(images.split(batch_size))
            self._calib[resolution] = [b for b in batches if len(b) > 1]  # BatchNorm needs 2+ samples
        return self._calib[resolution]

    def loader(self, split: str) -> Any:
        if split not in SPLITS:
            raise ConfigError(f"evaluate: split must be train, val or test, got {split!r}")
        return getattr(self.data, f"{split}_dataloader")()

    def eval_batches(self, split: str, resolution: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The split's images as the loader serves them at `resolution` (resized, normalised), cached: every
        subnet at one resolution is scored on the same tensors without resizing them again."""
        key = (split, resolution)
        if key not in self._eval:
            # a DataLoader iterator draws a seed from torch's generator; a training measures subnets mid-run, so
            # building the cache (once per process) must not move that generator, or a resumed training would
            # draw other numbers than an uninterrupted one
            with torch.random.fork_rng(), data_resolution(self.data, resolution, self.base_resolution):
                self._eval[key] = [(x, y) for x, y in self.loader(split)]
        return self._eval[key]

    def prepare(self, split: str, resolution: int) -> None:
        """Build every cache a measurement at `resolution` on `split` reads (before forking workers that share
        them)."""
        self.calibration_batches(resolution)
        self.eval_batches(split, resolution)
        if self.cache_prefix:
            self._prefix_batches(split, resolution)

    def _prefix_batches(
        self, split: str, resolution: int
    ) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
        """The shared layers' outputs on the calibration batches (BatchNorm on batch statistics, as recalibration
        runs them) and on the split (after their recalibration), cached per resolution."""
        net = self.supernet
        if resolution not in self._prefix_calib:
            outputs: list[torch.Tensor] = []
            calib = self.calibration_batches(resolution)
            recalibrate_bn(net, calib, lambda x: outputs.append(net.prefix(x)), _prefix_batchnorms(net))
            self._prefix_calib[resolution] = outputs
        key = (split, resolution)
        if key not in self._prefix_eval:
            self._prefix_eval[key] = _eval_outputs(net, net.prefix, self.eval_batches(split, resolution))
        return self._prefix_calib[resolution], self._prefix_eval[key]

    def correct(self, arch: Arch, split: str = "val", max_images: int | None = None) -> torch.Tensor:
        """Per image of `split` (the first `max_images` when given), whether subnet `arch` classifies it right,
        after BatchNorm recalibration at its resolution (bool vector, in the split's order)."""
        net = self.supernet
        was_training = net.training
        hits: list[torch.Tensor] = []
        try:
            net.set_active(arch)
            if self.cache_prefix:
                calib, batches, start = self._shared_blocks(split, arch.resolution, max_images)
                shared = {id(bn) for bn in _prefix_batchnorms(net)}
                shared |= {id(bn) for block in self._path for bn in block.batchnorms}
                own = [bn for bn in batchnorms_of(net) if id(bn) not in shared]
                run = lambda x: net.suffix(x, start)  # noqa: E731
                with phase("bn_recalib"):
                    recalibrate_bn(net, calib, run, own)
                    for block in self._path:  # the shared blocks' statistics, as a full pass leaves them
                        block.restore()
            else:
                batches, run = _first_images(self.eval_batches(split, arch.resolution), max_images), net
                with phase("bn_recalib"):
                    recalibrate_bn(net, self.calibration_batches(arch.resolution))
            net.eval()
            with phase("eval"), torch.no_grad():
                for x, y in batches:
                    hits.append(run(x).argmax(dim=1) == y)
        finally:
            net.train(was_training)
        if not hits:
            raise ValueError(f"evaluate: the {split} split yielded no images")
        return torch.cat(hits)

    def _shared_blocks(
        self, split: str, resolution: int, max_images: int | None
    ) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]], int]:
        """The active subnet's elastic blocks run and cached (`self._path`), reusing the longest start its path shares
        with the last subnet's; returns the last block's outputs on the calibration batches and on the split's first
        `max_images`, and the number of blocks they are after."""
        net = self.supernet
        calib, batches = self._prefix_batches(split, resolution)
        if self._path_of != (split, resolution, max_images):
            self._path, self._path_of = [], (split, resolution, max_images)
        keys = net.path_of(net.active_arch)
        same = 0
        while same < min(len(keys), len(self._path)) and self._path[same].key == keys[same]:
            same += 1
        del self._path[same:]
        if self._path:
            calib, batches = self._path[-1].calib, self._path[-1].batches
        else:
            batches = _first_images(batches, max_images)
        blocks = list(net.active_blocks())
        held = sum(block.nbytes for block in self._path)
        for i in range(same, len(keys)):
            if held >= self.path_cache_bytes:  # the later blocks run with the subnet's own layers instead
                break
            block = blocks[i]
            bns = batchnorms_of(block)
            outputs: list[torch.Tensor] = []
            with phase("bn_recalib"):
                recalibrate_bn(net, calib, lambda x: outputs.append(block(x)), bns)  # noqa: B023
            with phase("eval"):
                batches = _eval_outputs(net, block, batches)
            calib = outputs
            self._path.append(_PathBlock(keys[i], calib, batches, bns))
            held += self._path[-1].nbytes
        return calib, batches, len(self._path)

    def accuracy(self, arch: Arch, split: str = "val", max_images: int | None = None) -> float:
        """Top-1 accuracy in [0, 1] of subnet `arch` on `split` (its first `max_images` images when given)."""
        hits = self.correct(arch, split, max_images)
        return int(hits.sum()) / len(hits)


class _PathBlock:
    """One elastic block of the last measured subnet: its key in `ElasticSupernet.path_of`, its outputs during
    recalibration and on the split, and its recalibrated BatchNorm statistics."""

    def __init__(
        self,
        key: tuple[int, int, int, int],
        calib: list[torch.Tensor],
        batches: list[tuple[torch.Tensor, torch.Tensor]],
        batchnorms: list[torch.nn.Module],
    ):
        self.key, self.calib, self.batches, self.batchnorms = key, calib, batches, batchnorms
        self.stats = [{name: getattr(bn, name).clone() for name in _STATS} for bn in batchnorms]
        self.nbytes = sum(t.nbytes for t in calib) + sum(x.nbytes for x, _ in batches)

    def restore(self) -> None:
        with torch.no_grad():
            for bn, stats in zip(self.batchnorms, self.stats):
                for name, value in stats.items():
                    getattr(bn, name).copy_(value)


_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _eval_outputs(
    net: ElasticSupernet, run: Callable[[torch.Tensor], torch.Tensor], batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`run` (a part of `net`) on each batch's images, `net` in eval mode for the pass (its mode restored after)."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            return [(run(x), y) for x, y in batches]
    finally:
        net.train(was_training)


def sharing_order(net: ElasticSupernet, archs: Iterable[Arch]) -> list[Arch]:
    """`archs` ordered so that subnets which run the same first elastic blocks are adjacent (by resolution, then by
    `ElasticSupernet.path_of`): measured in this order, each reuses the blocks it shares with the one before."""
    return sorted(archs, key=lambda a: (a.resolution, net.path_of(a)))


def _first_images(
    batches: list[tuple[torch.Tensor, torch.Tensor]], max_images: int | None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches cut to their first `max_images` images (all of them when None)."""
    if max_images is None:
        return batches
    out, seen = [], 0
    for x, y in batches:
        if seen >= max_images:
            break
        out.append((x[: max_images - seen], y[: max_images - seen]) if seen + len(y) > max_images else (x, y))
        seen += len(y)
    return out


def _prefix_batchnorms(net: ElasticSupernet) -> list[torch.nn.Module]:
    """The BatchNorms of the layers every subnet shares (`ElasticSupernet.prefix_modules`)."""
    return [bn for m in net.prefix_modules() for bn in batchnorms_of(m)]


class data_resolution:
    """Context: the data module serves `resolution` inside, `base` after."""

    def __init__(self, data: Any, resolution: int, base: int):
        self.data, self.resolution, self.base = data, resolution, base

    def __enter__(self) -> None:
        if self.resolution != self.base:
            self.data.set_resolution(self.resolution)

    def __exit__(self, *exc: Any) -> None:
        if self.resolution != self.base:
            self.data.set_resolution(self.base)
