"""A trained supernet, in core: load its checkpoint, score a subnet, extract it, say which network it deploys.

The search and finetune stages use it; the trainer plugin that produced the checkpoint is not involved.

    supernet = Supernet.load(ctx.supernet_checkpoint, data)
    supernet.evaluate(arch, "val")   # BatchNorm recalibrated at arch.resolution, cached per (arch, split)
    supernet.extract(arch)           # the subnet's nn.Module with the supernet's weights, BN recalibrated
    supernet.network(arch)           # its DeployedNetwork: static, or rnnpool for an RNNPool-stem supernet
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tinyflow.arch.genome import Arch
from tinyflow.network import DeployedNetwork

if TYPE_CHECKING:
    import torch

    from tinyflow.arch.space import MBConvSpace
    from tinyflow.nn.elastic import ElasticSupernet
    from tinyflow.supernet.evaluation import SubnetEvaluator


class Supernet:
    """A trained elastic supernet with the data its subnets are recalibrated and scored on."""

    def __init__(self, net: ElasticSupernet, data: Any, recalib_batches: int = 4, seed: int = 0, checkpoint: str = ""):
        from tinyflow.supernet.evaluation import SubnetEvaluator

        self.net = net
        self.checkpoint = checkpoint
        # trained: its weights stay put, so the layers every subnet shares run once per resolution
        self.evaluator: SubnetEvaluator = SubnetEvaluator(net, data, recalib_batches, seed, cache_prefix=True)
        self._accuracy: dict[tuple[str, str, int | None], float] = {}

    @classmethod
    def load(
        cls,
        checkpoint: str | os.PathLike[str],
        data: Any,
        recalib_batches: int | None = None,
        seed: int | None = None,
    ) -> Supernet:
        """The supernet of a checkpoint (space and stem as recorded there), with `data` set up at its resolution.
        `recalib_batches` / `seed` default to how the trainer recalibrated subnets (recorded in the checkpoint)."""
        import torch

        from tinyflow.supernet.checkpoint import build_supernet, evaluation_of, read_checkpoint

        ckpt = read_checkpoint(checkpoint)
        net = build_supernet(ckpt, checkpoint)
        recorded = evaluation_of(ckpt)
        data.setup()
        data.set_resolution(net.space.resolution)
        # NHWC: BatchNorm recalibration 2x and a subnet's whole measurement 1.6x faster on CPU than NCHW (oneDNN;
        # the search's main cost), the same accuracies; `extract` gives plain contiguous networks
        net.to(memory_format=torch.channels_last)
        return cls(
            net,
            data,
            recorded["recalib_batches"] if recalib_batches is None else recalib_batches,
            recorded["seed"] if seed is None else seed,
            str(checkpoint),
        )

    @property
    def space(self) -> MBConvSpace:
        """The space the supernet holds (with an RNNPool stem: the stages before its cut pinned)."""
        return self.net.space

    @property
    def stem(self) -> dict[str, Any]:
        """`{"stem": "conv"}`, or `{"stem": "rnnpool", "rnnpool": {...resolved options}}`."""
        return self.net.stem_config

    def evaluate(self, arch: Arch, split: str = "val", max_images: int | None = None) -> float:
        """Accuracy in [0, 1] of subnet `arch` on `split` (its first `max_images` images when given), BatchNorm
        recalibrated at `arch.resolution` (cached)."""
        key = _key(arch, split, max_images)
        if key not in self._accuracy:
            self._accuracy[key] = self.evaluator.accuracy(arch, split, max_images)
        return self._accuracy[key]

    def is_evaluated(self, arch: Arch, split: str = "val", max_images: int | None = None) -> bool:
        """Whether `evaluate(arch, split, max_images)` is cached."""
        return _key(arch, split, max_images) in self._accuracy

    def remember(self, arch: Arch, split: str, max_images: int | None, accuracy: float) -> None:
        """Cache an accuracy `evaluate` would give (measured by a worker process on this supernet's copy)."""
        self._accuracy[_key(arch, split, max_images)] = float(accuracy)

    def sharing_order(self, archs: Sequence[Arch]) -> list[Arch]:
        """`archs` in the order that lets the evaluator's path cache reuse the most blocks
        (`tinyflow.supernet.evaluation.sharing_order`)."""
        from tinyflow.supernet.evaluation import sharing_order

        return sharing_order(self.net, archs)

    def calibration_batches(self, resolution: int) -> list[torch.Tensor]:
        """The train images BatchNorm is recalibrated on at `resolution` (the same every time)."""
        return self.evaluator.calibration_batches(resolution)

    def extract(self, arch: Arch) -> torch.nn.Module:
        """The subnet `arch` as its own network (`StaticNet`, or `RNNPoolNet` with an RNNPool stem) holding the
        supernet's weights, BatchNorm recalibrated, in eval mode."""
        import torch

        from tinyflow.nn.calibration import recalibrate_bn

        net = self.net.extract(arch).to(memory_format=torch.contiguous_format)
        recalibrate_bn(net, self.calibration_batches(arch.resolution))
        return net.eval()

    def network(self, arch: Arch) -> DeployedNetwork:
        """The network the supernet runs for `arch`: plain (`static`), or `rnnpool` with the stem's options (the
        cut at `arch`'s first block after the pinned stages)."""
        stem = self.net.rnnpool_stem
        if stem is None:
            return DeployedNetwork.plain(arch)
        return DeployedNetwork("rnnpool", arch.to_dict(), stem.rewrite(arch).options())


def _key(arch: Arch, split: str, max_images: int | None) -> tuple[str, str, int | None]:
    """What one measurement's accuracy is cached under."""
    return (arch.key(), split, max_images)


__all__ = ["Supernet"]
