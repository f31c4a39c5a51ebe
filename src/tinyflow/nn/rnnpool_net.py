"""`RNNPoolNet`: an MBConv network whose early high-resolution part is replaced by RNNPool.

stem conv -> RNNPool -> MBConv blocks from `cut` on -> [head 1x1] -> global average pool -> classifier. Parameter
names are `StaticNet`'s for the same arch (`stem`, `blocks.<original index>`, `head`, `classifier`) plus
`rnnpool.rnn1` / `rnnpool.rnn2`, which is what the IR of `tinyflow.ir.rnnpool.rnnpool_graph` refers to.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tinyflow.arch.genome import Arch
from tinyflow.arch.rnnpool import RNNPoolArch, RNNPoolOptions, rewrite
from tinyflow.nn.rnnpool import RNNPool
from tinyflow.nn.static import ConvBNAct, MBConv


class RNNPoolNet(nn.Module):
    """The PyTorch network of an `RNNPoolArch`; `.arch` is the original arch, `.rnnpool_arch` the rewrite."""

    def __init__(self, rarch: RNNPoolArch, dropout: float = 0.0):
        super().__init__()
        base = rarch.base
        self.arch: Arch = base
        self.rnnpool_arch = rarch
        self.stem = ConvBNAct(base.in_channels, rarch.stem_channels, base.stem_kernel, base.stem_stride)
        self.rnnpool = RNNPool(
            rarch.stem_channels,
            rarch.hidden1,
            rarch.hidden2,
            patch=rarch.patch,
            stride=rarch.stride,
            padding=rarch.padding,
            cell=rarch.cell,
        )
        # keyed by the block's index in the original arch, so names match StaticNet(arch) and the IR
        self.blocks = nn.ModuleDict({str(rarch.cut + i): MBConv(b) for i, b in enumerate(rarch.blocks)})
        last = rarch.blocks[-1].out_channels
        self.head = ConvBNAct(last, base.head_channels, 1) if base.head_channels else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(base.head_channels or last, base.num_classes)

    @classmethod
    def from_arch(cls, arch: Arch, options: RNNPoolOptions | dict | None = None, dropout: float = 0.0) -> RNNPoolNet:
        return cls(rewrite(arch, options), dropout=dropout)

    @torch.no_grad()
    def init_from_static(self, net: nn.Module) -> list[str]:
        """Copy the weights that carry over from the un-rewritten network (a `StaticNet` of `self.arch`, e.g. a
        subnet extracted from the supernet): the stem when its width is kept, every kept block whose shapes
        match, the head and the classifier. RNNPool (and a first block whose input width changed) stay as
        initialised. Returns the names of the copied parameters and buffers."""
        src_blocks = getattr(net, "blocks", [])
        pairs: list[tuple[nn.Module | None, nn.Module | None]] = [(self.stem, getattr(net, "stem", None))]
        pairs += [(b, src_blocks[int(k)] if int(k) < len(src_blocks) else None) for k, b in self.blocks.items()]
        pairs += [(self.head, getattr(net, "head", None)), (self.classifier, getattr(net, "classifier", None))]
        copied: list[str] = []
        own = {id(m): n for n, m in self.named_modules()}
        for dst, src in pairs:
            if dst is None or src is None:
                continue
            sd, dd = src.state_dict(), dst.state_dict()
            if sd.keys() != dd.keys() or any(sd[k].shape != dd[k].shape for k in dd):
                continue
            dst.load_state_dict(sd)
            copied += [f"{own[id(dst)]}.{k}" for k in dd]
        return copied

    def _tail(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks.values():
            x = block(x)
        if self.head is not None:
            x = self.head(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._tail(self.rnnpool(self.stem(x)))

    @torch.no_grad()
    def forward_patchwise(self, x: torch.Tensor) -> torch.Tensor:
        """Run the plan of the `rnnpool` scheduler: for each RNNPool patch, compute only the stem outputs it
        covers (from the input region under them) and pool them; the full stem output never exists.
        Equal to `forward` in eval mode (the test checks it)."""
        ra = self.rnnpool_arch
        k, s = self.arch.stem_kernel, self.arch.stem_stride
        (hs, ws), (ho, wo) = ra.stem_hw, ra.pooled_hw
        (r, c), (sr, sc), (pr, pc) = ra.patch, ra.stride, ra.padding
        conv, post = self.stem.conv, nn.Sequential(*list(self.stem)[1:])
        xp = F.pad(x, (k // 2,) * 4)  # the stem's own zero padding at the image border
        pooled = x.new_zeros(x.shape[0], ra.pooled_channels, ho, wo)
        patch = x.new_zeros(x.shape[0], ra.stem_channels, r, c)  # the one patch buffer, reused
        for oy in range(ho):
            top = oy * sr - pr
            y0, y1 = max(top, 0), min(top + r, hs)
            for ox in range(wo):
                left = ox * sc - pc
                x0, x1 = max(left, 0), min(left + c, ws)
                patch.zero_()  # RNNPool's zero padding outside the stem map
                if y1 > y0 and x1 > x0:
                    region = xp[:, :, y0 * s : (y1 - 1) * s + k, x0 * s : (x1 - 1) * s + k]
                    stem = post(F.conv2d(region, conv.weight, None, conv.stride))
                    patch[:, :, y0 - top : y1 - top, x0 - left : x1 - left] = stem
                pooled[:, :, oy, ox] = self.rnnpool.pool_patches(patch.permute(0, 2, 3, 1))
        return self._tail(pooled)
