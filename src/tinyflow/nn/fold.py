"""BatchNorm folded into the conv before it, for inference on a supernet's subnets.

After BatchNorm recalibration a subnet is only evaluated; with each BatchNorm folded into its conv (weights scaled,
a bias added) the network computes the same function up to float rounding without the BatchNorm passes over the
activations. On CPU those passes and out-of-place ReLU6 took over half of a subnet's evaluation, the search's main
cost (1.0 -> 0.6 s per 2,000 val images at the default setting). Static networks that are exported keep their
BatchNorm modules: export and quantisation see Conv -> BatchNorm as trained.
"""

from __future__ import annotations

import torch
from torch import nn


def fold_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """`weight` (out channels first) and a bias that fold inference-mode `bn` (its first `weight.shape[0]`
    channels, running statistics) into the conv before it."""
    c = weight.shape[0]
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fold_bn: the BatchNorm keeps no running statistics")
    scale = bn.weight[:c] * torch.rsqrt(bn.running_var[:c] + bn.eps)
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias[:c] - bn.running_mean[:c] * scale
