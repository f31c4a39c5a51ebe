"""BatchNorm recalibration: re-estimate running statistics of a (sub)network on a few batches."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them as the plain average over `batches`
    (momentum None) with everything else in eval mode. Returns the number of batches used.

    A subnet of a supernet is trained with batch statistics only; its running statistics are meaningless until
    this runs (OFA). The model's train/eval mode and BatchNorm momenta are restored afterwards.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    was_training = model.training
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    n = 0
    try:
        for x in batches:
            model(x)
            n += 1
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        model.train(was_training)
    if n == 0:
        raise ValueError("recalibrate_bn: no batches given")
    return n
