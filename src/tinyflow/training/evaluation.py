"""Accuracy of a classifier over a data loader."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

from tinyflow.training.profile import phase


@torch.no_grad()
def count_correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    return int((logits.argmax(dim=1) == labels).sum())


def nhwc(x: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) in channels-last memory; other tensors as they are."""
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def eval_forward(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model`'s inference call for a model in eval mode: its `forward_folded` (the BatchNorms folded into the
    convs, `tinyflow.nn.fold`) where it has one, else the model itself."""
    return getattr(model, "forward_folded", model)


def inference_forward(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """What `evaluate_accuracy` calls: `eval_forward` of a channels-last copy of `model` in eval mode. On CPU that
    is 2.2x faster than the trained layout with separate BatchNorm passes (`benchmarks/bench_eval.py`, the largest
    r48 subnet, one thread) and the same function up to float rounding; `model` itself (its memory format, its
    mode) is left as it is."""
    return eval_forward(copy.deepcopy(model).eval().to(memory_format=torch.channels_last))


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, loader: Iterable, max_batches: int | None = None) -> float:
    """Top-1 accuracy in [0, 1] of `model` in eval mode over `loader` (phase `eval` of an active training profile),
    computed by `inference_forward(model)`."""
    forward = inference_forward(model)
    correct = total = 0
    with phase("eval"):
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            correct += count_correct(forward(nhwc(x)), y)
            total += len(y)
    if total == 0:
        raise ValueError("evaluate_accuracy: the loader yielded no batches")
    return correct / total
