"""BatchNorm recalibration: re-estimate running statistics of a (sub)network on a few batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    forward: Callable[[torch.Tensor], object] | None = None,
    batchnorms: Sequence[nn.Module] | None = None,
) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them as the plain average over `batches`
    (momentum None) with everything else in eval mode. Returns the number of batches used.

    A subnet of a supernet is trained with batch statistics only; its running statistics are meaningless until
    this runs (OFA). The model's train/eval mode and BatchNorm momenta are restored afterwards. `forward` (default:
    the model) runs each batch and `batchnorms` (default: all of the model's) are the ones re-estimated: a part of
    the model, fed what the part before it gives (`tinyflow.supernet.evaluation`).
    """
    run = model if forward is None else forward
    bns = list(batchnorms) if batchnorms is not None else batchnorms_of(model)
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
            run(x)
            n += 1
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        model.train(was_training)
    if n == 0:
        raise ValueError("recalibrate_bn: no batches given")
    return n


def batchnorms_of(module: nn.Module) -> list[nn.Module]:
    """Every BatchNorm in `module`."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
