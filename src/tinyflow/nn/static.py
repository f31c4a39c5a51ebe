"""The static PyTorch network of an `Arch` (what is fine-tuned, exported and deployed)."""

from __future__ import annotations

import torch
from torch import nn

from tinyflow.arch.genome import Arch, Block
from tinyflow.nn.activation import relu6_
from tinyflow.nn.depthwise import depthwise_conv, folded_conv
from tinyflow.nn.fold import fold_bn
from tinyflow.nn.pointwise import pointwise_conv


class ConvBNAct(nn.Sequential):
    """conv (same padding k//2, no bias) -> BatchNorm -> ReLU6 (or no activation)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)  # export and evaluation see the plain Conv -> BatchNorm -> ReLU6 modules
        conv = self.conv
        if 1 < conv.groups == conv.in_channels == conv.out_channels:
            # training a depthwise conv: its weight gradient as one grouped forward conv (tinyflow.nn.depthwise)
            y = self.bn(depthwise_conv(x, conv.weight, conv.stride[0]))
        elif conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1 and conv.bias is None:
            y = self.bn(pointwise_conv(x, conv.weight))  # a matrix product on small channels-last maps
        else:
            y = self.bn(conv(x))
        return relu6_(y) if len(self) > 2 else y

    def forward_folded(self, x: torch.Tensor) -> torch.Tensor:
        """Inference with the BatchNorm folded into the conv (`tinyflow.nn.fold`; the supernet's evaluation)."""
        conv = self.conv
        w, b = fold_bn(conv.weight, self.bn)
        y = folded_conv(x, w, b, conv.stride[0], conv.groups)
        return self[2](y) if len(self) > 2 else y

    @property
    def conv(self) -> nn.Conv2d:
        return self[0]

    @property
    def bn(self) -> nn.BatchNorm2d:
        return self[1]


class MBConv(nn.Module):
    """Inverted residual block: [expand 1x1] -> depthwise kxk -> project 1x1 (linear) [+ input]."""

    def __init__(self, block: Block):
        super().__init__()
        self.spec = block
        hidden = block.hidden
        self.expand = ConvBNAct(block.in_channels, hidden, 1) if block.expand != 1 else None
        self.depthwise = ConvBNAct(hidden, hidden, block.kernel, block.stride, groups=hidden)
        self.project = ConvBNAct(hidden, block.out_channels, 1, act=False)
        self.residual = block.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y

    def forward_folded(self, x: torch.Tensor) -> torch.Tensor:
        """Inference with the BatchNorms folded into the convs (`tinyflow.nn.fold`; the supernet's evaluation)."""
        y = self.expand.forward_folded(x) if self.expand is not None else x
        y = self.project.forward_folded(self.depthwise.forward_folded(y))
        return x + y if self.residual else y


class StaticNet(nn.Module):
    """stem -> MBConv blocks -> [head 1x1] -> global average pool -> dropout -> linear classifier."""

    def __init__(self, arch: Arch, dropout: float = 0.0):
        super().__init__()
        self.arch = arch
        self.stem = ConvBNAct(arch.in_channels, arch.stem_channels, arch.stem_kernel, arch.stem_stride)
        self.blocks = nn.ModuleList(MBConv(b) for b in arch.blocks)
        self.head = ConvBNAct(arch.blocks[-1].out_channels, arch.head_channels, 1) if arch.head_channels else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(arch.last_channels, arch.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x) if self.head is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(self.dropout(x))

    def forward_folded(self, x: torch.Tensor) -> torch.Tensor:
        """Inference (eval mode) with every BatchNorm folded into its conv (`tinyflow.nn.fold`): what accuracy
        evaluation runs; `forward` keeps Conv -> BatchNorm for training and export."""
        x = self.stem.forward_folded(x)
        for block in self.blocks:
            x = block.forward_folded(x)
        x = self.head.forward_folded(x) if self.head is not None else x
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
