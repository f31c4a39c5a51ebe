"""The elastic MBConv supernet (Once-for-All) over an `MBConvSpace`.

One set of weights holds every subnet of the space:

- elastic kernel: each depthwise conv keeps the largest kernel's weights; a smaller kernel is the centre crop of
  the next larger (transformed) kernel passed through a learned kernel-transformation matrix (identity at start);
- elastic depth: a stage runs its first D blocks;
- elastic expand: a block uses the first `in·e` hidden channels; `sort_channels()` re-sorts them by importance
  so that slicing keeps the most important ones;
- elastic BatchNorm: running statistics and affine parameters are sliced to the active channels;
- the width multiplier is fixed per supernet; the resolution is free (the network is fully convolutional).

`set_active(arch)` selects a subnet, `extract(arch)` copies it into a `StaticNet` whose outputs equal the active
supernet's.

`stem="rnnpool"` (RNNPool, Saha et al. 2020) trains the network that `scheduler=rnnpool` deploys: stem conv ->
RNNPool (fixed, not elastic) -> the elastic blocks from the cut on; the blocks before the cut do not exist in the
supernet. The options are the scheduler's (`tinyflow.arch.rnnpool.RNNPoolOptions`), resolved on the space's largest
arch; the cut must start a stage. The first kept block slot is built with RNNPool's 4·hidden2 input channels (as
`rewrite` gives the first kept block), so every arch of the space stays valid whatever hidden2 is. The dropped
stages are pinned in the genome (`MBConvSpace.fixed_stages`: largest choices), so sampled and searched archs all
have the same blocks before the cut, and the same cut index; an arch with other blocks there runs the same network
(they are ignored). `extract(arch)` then gives an `RNNPoolNet`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tinyflow.arch.genome import Arch
from tinyflow.arch.rnnpool import RNNPoolOptions, SupernetStem, supernet_stem
from tinyflow.arch.space import ArchOutsideSpaceError, MBConvSpace, StageSpec
from tinyflow.errors import ConfigError, TinyflowError
from tinyflow.nn.activation import relu6_
from tinyflow.nn.calibration import batchnorms_of
from tinyflow.nn.depthwise import depthwise_conv, folded_conv
from tinyflow.nn.fold import fold_bn
from tinyflow.nn.pointwise import pointwise_conv
from tinyflow.nn.rnnpool import RNNPool
from tinyflow.nn.rnnpool_net import RNNPoolNet
from tinyflow.nn.static import ConvBNAct, MBConv, StaticNet

STEMS = ("conv", "rnnpool")


class ArchNotInSupernetError(TinyflowError, ArchOutsideSpaceError):
    """An arch asks for a block, width or choice this supernet does not hold."""


# ------------------------------------------------------------------------------------------------ layers
class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose parameters and running statistics are sliced to the input's channel count."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or self.running_mean is None
        # prefix slices are views: batch_norm's in-place running-stat update lands in the full buffers
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.running_mean is not None else None,
            self.running_var[:c] if self.running_var is not None else None,
            self.weight[:c],
            self.bias[:c],
            use_batch_stats,
            factor,
            self.eps,
        )


class ElasticPointwise(nn.Conv2d):
    """1x1 conv that uses the first `active_out` output channels and as many input channels as it is given."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 1, bias=False)
        self.active_out = cout

    def active_weight(self, cin: int) -> torch.Tensor:
        return self.weight[: self.active_out, :cin]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise_conv(x, self.active_weight(x.shape[1]))


class ElasticDepthwise(nn.Module):
    """Depthwise conv holding the largest kernel; smaller kernels via centre crop + transformation matrices."""

    def __init__(self, channels: int, kernel_choices: Sequence[int], stride: int):
        super().__init__()
        self.kernels = sorted(set(kernel_choices), reverse=True)
        self.max_kernel = self.kernels[0]
        self.stride = stride
        ref = nn.Conv2d(channels, channels, self.max_kernel, groups=channels, bias=False)  # default init
        self.weight = nn.Parameter(ref.weight.detach().clone())
        # one matrix per step down the chain (7→5, 5→3), acting on the flattened small kernel, shared by channels
        self.transforms = nn.ParameterDict(
            {
                f"{big}to{small}": nn.Parameter(torch.eye(small * small))
                for big, small in zip(self.kernels, self.kernels[1:])
            }
        )
        self.active_kernel = self.max_kernel

    def kernel_weight(self, kernel: int, channels: int) -> torch.Tensor:
        """The `kernel`×`kernel` weights of the first `channels` channels."""
        if kernel not in self.kernels:
            raise ArchNotInSupernetError(f"kernel {kernel} is not one of {sorted(self.kernels)}")
        w = self.weight[:channels]
        for big, small in zip(self.kernels, self.kernels[1:]):
            if big <= kernel:
                break
            start = (big - small) // 2
            w = w[:, :, start : start + small, start : start + small].reshape(channels, small * small)
            w = F.linear(w, self.transforms[f"{big}to{small}"]).reshape(channels, 1, small, small)
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, k = x.shape[1], self.active_kernel
        return depthwise_conv(x, self.kernel_weight(k, c), self.stride)


class ElasticMBConv(nn.Module):
    """One block slot of an elastic stage: elastic kernel and expand ratio, fixed in/out channels and stride."""

    def __init__(self, cin: int, cout: int, stride: int, kernel_choices: Sequence[int], expand_choices: Sequence[int]):
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        hidden = cin * max(expand_choices)
        self.expand_conv = ElasticPointwise(cin, hidden)
        self.expand_bn = ElasticBatchNorm2d(hidden)
        self.dw = ElasticDepthwise(hidden, kernel_choices, stride)
        self.dw_bn = ElasticBatchNorm2d(hidden)
        self.project_conv = ElasticPointwise(hidden, cout)
        self.project_bn = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout
        self.active_expand = max(expand_choices)

    def set_active(self, kernel: int, expand: int) -> None:
        self.dw.active_kernel = kernel
        self.active_expand = expand
        self.expand_conv.active_out = self.cin * expand

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.expand_bn.training or self.dw_bn.training or self.project_bn.training):
            return self._forward_folded(x)  # not while `recalibrate_bn` runs the BatchNorms alone in train mode
        y = x
        if self.active_expand != 1:
            y = relu6_(self.expand_bn(self.expand_conv(x)))
        y = relu6_(self.dw_bn(self.dw(y)))
        y = self.project_bn(self.project_conv(y))
        return x + y if self.residual else y

    def _forward_folded(self, x: torch.Tensor) -> torch.Tensor:
        """Inference with each BatchNorm folded into its conv (`tinyflow.nn.fold`)."""
        y = x
        if self.active_expand != 1:
            w, b = fold_bn(self.expand_conv.active_weight(x.shape[1]), self.expand_bn)
            y = F.relu6(F.conv2d(x, w, b), inplace=True)
        c, k = y.shape[1], self.dw.active_kernel
        w, b = fold_bn(self.dw.kernel_weight(k, c), self.dw_bn)
        y = F.relu6(folded_conv(y, w, b, self.stride, c), inplace=True)
        w, b = fold_bn(self.project_conv.active_weight(c), self.project_bn)
        y = F.conv2d(y, w, b)
        return x + y if self.residual else y

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Re-sort hidden channels by importance, most important first (OFA: L1 norm of the projection weights
        reading each hidden channel, i.e. how much the channel contributes to the block's output)."""
        importance = self.project_conv.weight.abs().sum(dim=(0, 2, 3))
        order = torch.argsort(importance, descending=True, stable=True)
        self.project_conv.weight.copy_(self.project_conv.weight[:, order])
        self.dw.weight.copy_(self.dw.weight[order])
        self.expand_conv.weight.copy_(self.expand_conv.weight[order])
        for bn in (self.expand_bn, self.dw_bn):
            bn.weight.copy_(bn.weight[order])
            bn.bias.copy_(bn.bias[order])
            bn.running_mean.copy_(bn.running_mean[order])
            bn.running_var.copy_(bn.running_var[order])


# ------------------------------------------------------------------------------------------------ supernet
class ElasticSupernet(nn.Module):
    """stem → fixed MBConv1 block → elastic stages → fixed tail blocks → [head] → pool → classifier.

    With `stem="rnnpool"`: stem → RNNPool → the blocks from the cut on (a dropped stage is an empty slot list,
    `first` is None when block 0 is dropped); `rnnpool` holds the options (RNNPoolOptions fields, as
    `scheduler=rnnpool` takes them) and `self.space` is `space` with the dropped stages pinned.
    """

    def __init__(
        self,
        space: MBConvSpace,
        dropout: float = 0.0,
        stem: str = "conv",
        rnnpool: RNNPoolOptions | Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.rnnpool_stem = _supernet_stem(space, stem, rnnpool)
        if self.rnnpool_stem is not None:
            space = self.rnnpool_stem.space
        self.space = space
        top = space.max_arch()
        self.max_depth = space.max_depth
        ro = self.rnnpool_stem.options if self.rnnpool_stem is not None else None
        cut_stage = self.rnnpool_stem.cut_stage if self.rnnpool_stem is not None else 0
        stem_channels = int(ro.stem_channels) if ro is not None and ro.stem_channels else top.stem_channels
        self.stem = ConvBNAct(top.in_channels, stem_channels, top.stem_kernel, top.stem_stride)
        self.rnnpool = None
        if ro is not None:
            self.rnnpool = RNNPool(stem_channels, ro.hidden1, ro.hidden2, ro.patch, ro.stride, ro.padding, ro.cell)

        def cin(stage: int, channels: int) -> int:
            """Input width of a stage's first block: RNNPool's 4·hidden2 when the stage is the first kept one."""
            return self.rnnpool.out_channels if self.rnnpool is not None and stage == cut_stage else channels

        self.first = MBConv(replace(top.blocks[0], in_channels=cin(0, stem_channels))) if cut_stage == 0 else None
        stages: list[nn.ModuleList] = []
        prev = top.blocks[0].out_channels
        for s, spec in enumerate(space.stages):
            out = space.channels(spec.width)
            slots = [
                ElasticMBConv(
                    cin(s + 1, prev) if j == 0 else out,
                    out,
                    spec.stride if j == 0 else 1,
                    space.kernel_choices,
                    space.expand_choices,
                )
                for j in range(self.max_depth)
            ]
            stages.append(nn.ModuleList(slots if s + 1 >= cut_stage else []))
            prev = out
        self.stages = nn.ModuleList(stages)
        n_tail = len(space.tail_channels)
        tail = [b for b in top.blocks[len(top.blocks) - n_tail :] if b.stage >= cut_stage]
        self.tail = nn.ModuleList(
            MBConv(replace(b, in_channels=cin(b.stage, b.in_channels)) if i == 0 else b) for i, b in enumerate(tail)
        )
        self.head = ConvBNAct(top.blocks[-1].out_channels, top.head_channels, 1) if top.head_channels else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(top.last_channels, top.num_classes)
        self.active_depths = [self.max_depth] * len(space.stages)
        self.active_arch = top

    # ---- the space --------------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Arch:
        return self.space.sample(rng)

    def max_arch(self) -> Arch:
        return self.space.max_arch()

    @property
    def stem_config(self) -> dict[str, Any]:
        """The stem as constructor keywords, JSON-ready (`ElasticSupernet(space, **net.stem_config)` rebuilds it)."""
        return _stem_config(self.rnnpool_stem)

    def min_arch(self) -> Arch:
        return self.space.min_arch()

    def genome_of(self, arch: Arch) -> dict[str, list[int]]:
        """Read (depths, kernels, expands) off an arch's blocks; raise `ArchNotInSupernetError` naming the first
        block, width or choice this supernet does not hold."""
        space = self.space
        ref = space.max_arch()
        if self.rnnpool_stem is not None:
            arch = self._pinned_prefix(arch, ref)
        fixed = (
            ("in_channels", arch.in_channels, ref.in_channels),
            ("num_classes", arch.num_classes, ref.num_classes),
            ("stem_channels", arch.stem_channels, ref.stem_channels),
            ("stem_kernel", arch.stem_kernel, ref.stem_kernel),
            ("stem_stride", arch.stem_stride, ref.stem_stride),
            ("head_channels", arch.head_channels, ref.head_channels),
        )
        for field, got, want in fixed:
            if got != want:
                raise ArchNotInSupernetError(
                    f"arch '{arch.name}': {field} = {got}, but this supernet (space '{space.name}', width_mult "
                    f"{space.width_mult}) has {want}. Use an arch sampled from the same space and width multiplier."
                )
        n_stages, n_tail = len(space.stages), len(space.tail_channels)
        blocks = list(arch.blocks)
        if not blocks or blocks[0] != ref.blocks[0]:
            raise ArchNotInSupernetError(f"arch '{arch.name}': block 0 must be the space's fixed block {ref.blocks[0]}")
        tail_ref = ref.blocks[len(ref.blocks) - n_tail :] if n_tail else ()
        if n_tail and tuple(blocks[len(blocks) - n_tail :]) != tuple(tail_ref):
            raise ArchNotInSupernetError(
                f"arch '{arch.name}': its last {n_tail} block(s) must be the space's fixed tail {list(tail_ref)}"
            )
        middle = blocks[1 : len(blocks) - n_tail]
        depths: list[int] = []
        kernels = [max(space.kernel_choices)] * space.n_slots
        expands = [max(space.expand_choices)] * space.n_slots
        for s in range(n_stages):
            in_stage = [b for b in middle if b.stage == s + 1]
            depths.append(len(in_stage))
            for j, b in enumerate(in_stage[: self.max_depth]):
                kernels[s * self.max_depth + j] = b.kernel
                expands[s * self.max_depth + j] = b.expand
        stray = [i + 1 for i, b in enumerate(middle) if not 1 <= b.stage <= n_stages]
        if stray:
            raise ArchNotInSupernetError(
                f"arch '{arch.name}': block {stray[0]} has stage {middle[stray[0] - 1].stage}; the elastic stages "
                f"are 1..{n_stages}"
            )
        try:
            rebuilt = space.build(depths, kernels, expands)
        except ArchOutsideSpaceError as exc:
            raise ArchNotInSupernetError(f"arch '{arch.name}' is outside space '{space.name}': {exc}") from None
        for i, (got, want) in enumerate(zip(arch.blocks, rebuilt.blocks)):
            if got != want:
                raise ArchNotInSupernetError(
                    f"arch '{arch.name}': block {i} is {got}, but the space at width_mult {space.width_mult} gives "
                    f"{want} there"
                )
        return {"depths": depths, "kernels": kernels, "expands": expands}

    def _pinned_prefix(self, arch: Arch, ref: Arch) -> Arch:
        """`arch` with its blocks before the RNNPool stem's cut replaced by the space's pinned ones: they never run."""
        cut = self.rnnpool_stem.cut_stage  # type: ignore[union-attr]
        blocks = [b for b in ref.blocks if b.stage < cut] + [b for b in arch.blocks if b.stage >= cut]
        try:
            return replace(arch, blocks=tuple(blocks))
        except ValueError as exc:
            raise ArchNotInSupernetError(
                f"arch '{arch.name}' does not fit this supernet's RNNPool stem (space '{self.space.name}', width_mult "
                f"{self.space.width_mult}): {exc}. Use an arch of the same space and width multiplier."
            ) from None

    # ---- activation -------------------------------------------------------------------------------------
    def set_active(self, arch: Arch) -> None:
        """Make `arch` the subnet that `forward` runs (the resolution is whatever the input has)."""
        g = self.genome_of(arch)
        self.active_depths = list(g["depths"])
        for s, slots in enumerate(self.stages):
            for j, block in enumerate(slots):
                slot = s * self.max_depth + j
                block.set_active(g["kernels"][slot], g["expands"][slot])
        self.active_arch = arch

    def active_blocks(self) -> Iterable[ElasticMBConv]:
        for slots, depth in zip(self.stages, self.active_depths):
            yield from list(slots)[:depth]

    def prefix_modules(self) -> list[nn.Module]:
        """The layers every subnet runs alike, whatever the arch: stem, RNNPool, the fixed first block."""
        return [m for m in (self.stem, self.rnnpool, self.first) if m is not None]

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The output of `prefix_modules` (the same for every subnet at one resolution)."""
        x = _fixed(self.stem, x)
        if self.rnnpool is not None:
            x = self.rnnpool(x)
        return x if self.first is None else _fixed(self.first, x)

    def path_of(self, arch: Arch) -> list[tuple[int, int, int, int]]:
        """`arch`'s elastic blocks in order, each as (stage, slot, kernel, expand): two subnets whose paths share
        their first n entries run the same first n blocks on the prefix's output."""
        g = self.genome_of(arch)
        return [
            (s, j, g["kernels"][s * self.max_depth + j], g["expands"][s * self.max_depth + j])
            for s, depth in enumerate(g["depths"])
            for j in range(min(depth, len(self.stages[s])))
        ]

    def suffix(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The active subnet from the prefix's output on — its elastic blocks (from the `start`-th active one, given
        that block's input), tail, head, pool and classifier."""
        for block in list(self.active_blocks())[start:]:
            x = block(x)
        for block in self.tail:
            x = _fixed(block, x)
        if self.head is not None:
            x = _fixed(self.head, x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(x))

    def sort_channels(self) -> None:
        """Re-sort every elastic block's hidden channels by importance (before the expand phase)."""
        if 1 in self.space.expand_choices:  # expand 1 maps hidden channels straight to input channels
            return
        for slots in self.stages:
            for block in slots:
                block.sort_channels()

    # ---- extraction -------------------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, arch: Arch) -> StaticNet | RNNPoolNet:
        """A `StaticNet(arch)` holding this supernet's weights for `arch` (kernel transforms applied, BatchNorm
        statistics copied); in eval mode its outputs equal the supernet's with `arch` active. With the RNNPool stem,
        the `RNNPoolNet` of `arch` rewritten as the stem cuts it (stem, RNNPool, kept blocks, head copied)."""
        self.set_active(arch)
        net: StaticNet | RNNPoolNet
        if self.rnnpool_stem is None:
            net = StaticNet(arch, dropout=self.dropout.p)
            statics = list(net.blocks)
        else:
            net = RNNPoolNet(self.rnnpool_stem.rewrite(arch), dropout=self.dropout.p)
            net.rnnpool.load_state_dict(self.rnnpool.state_dict())  # type: ignore[union-attr]
            statics = list(net.blocks.values())
        net.stem.load_state_dict(self.stem.state_dict())
        sources: list[nn.Module] = [*([self.first] if self.first is not None else []), *self.active_blocks()]
        sources += list(self.tail)
        if len(sources) != len(statics):  # an internal inconsistency, not a user error
            raise RuntimeError(f"extract: {len(sources)} supernet blocks for {len(statics)} blocks of '{arch.name}'")
        for static, block in zip(statics, sources):
            if isinstance(block, ElasticMBConv):
                _copy_block(static, block)
            else:
                static.load_state_dict(block.state_dict())
        if self.head is not None:
            net.head.load_state_dict(self.head.state_dict())
        net.classifier.load_state_dict(self.classifier.state_dict())
        return net.train(self.training)


def _fixed(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A fixed (not elastic) layer: in inference with its BatchNorms folded into the convs (the elastic blocks fold
    their own); as trained while its BatchNorms are in train mode (training, or `recalibrate_bn` estimating them)."""
    return module(x) if any(bn.training for bn in batchnorms_of(module)) else module.forward_folded(x)


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, c: int) -> None:
    dst.weight.copy_(src.weight[:c])
    dst.bias.copy_(src.bias[:c])
    dst.running_mean.copy_(src.running_mean[:c])
    dst.running_var.copy_(src.running_var[:c])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)
    dst.eps, dst.momentum = src.eps, src.momentum


def _copy_block(static: MBConv, block: ElasticMBConv) -> None:
    hidden = block.cin * block.active_expand
    if static.expand is not None:
        static.expand.conv.weight.copy_(block.expand_conv.weight[:hidden])
        _copy_bn(static.expand.bn, block.expand_bn, hidden)
    static.depthwise.conv.weight.copy_(block.dw.kernel_weight(block.dw.active_kernel, hidden))
    _copy_bn(static.depthwise.bn, block.dw_bn, hidden)
    static.project.conv.weight.copy_(block.project_conv.weight[:, :hidden])
    _copy_bn(static.project.bn, block.project_bn, block.cout)


# ------------------------------------------------------------------------------------------------ helpers
def _supernet_stem(
    space: MBConvSpace, stem: str, rnnpool: RNNPoolOptions | Mapping[str, Any] | None
) -> SupernetStem | None:
    if stem not in STEMS:
        raise ConfigError(f"trainer.stem (the supernet's stem) must be one of {list(STEMS)}, got {stem!r}.")
    if stem == "conv":
        return None
    return supernet_stem(space, rnnpool if isinstance(rnnpool, RNNPoolOptions) else dict(rnnpool or {}))


def _stem_config(rs: SupernetStem | None) -> dict[str, Any]:
    return {"stem": "conv"} if rs is None else {"stem": "rnnpool", "rnnpool": rs.to_dict()}


def resolve_stem(
    space: MBConvSpace, stem: str = "conv", rnnpool: RNNPoolOptions | Mapping[str, Any] | None = None
) -> tuple[MBConvSpace, dict[str, Any]]:
    """(the space, the stem config) that `ElasticSupernet(space, stem=stem, rnnpool=rnnpool)` would have, without
    building it: the space with the stages an RNNPool stem drops pinned, and the stem's resolved options."""
    rs = _supernet_stem(space, stem, rnnpool)
    return (space if rs is None else rs.space), _stem_config(rs)


def space_to_dict(space: MBConvSpace) -> dict[str, Any]:
    """The fields that define an `MBConvSpace` (plain JSON types), to store beside supernet weights."""
    d = asdict(replace(space, extra={}))
    d.pop("extra")
    d["stages"] = [dict(s) for s in d["stages"]]
    for k, v in d.items():
        if isinstance(v, tuple):
            d[k] = list(v)
    return d


def space_from_dict(d: dict[str, Any]) -> MBConvSpace:
    d = dict(d)
    d["stages"] = tuple(StageSpec(**s) for s in d["stages"])
    for k in ("tail_channels", "kernel_choices", "expand_choices", "depth_choices"):
        d[k] = tuple(d[k])
    return MBConvSpace(**d)


__all__ = [
    "ArchNotInSupernetError",
    "ElasticBatchNorm2d",
    "ElasticDepthwise",
    "ElasticMBConv",
    "ElasticSupernet",
    "resolve_stem",
    "space_from_dict",
    "space_to_dict",
]
