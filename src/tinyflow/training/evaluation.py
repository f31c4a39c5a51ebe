"""Accuracy of a classifier over a data loader."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from tinyflow.training.profile import phase


@torch.no_grad()
def count_correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    return int((logits.argmax(dim=1) == labels).sum())


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, loader: Iterable, max_batches: int | None = None) -> float:
    """Top-1 accuracy in [0, 1] of `model` (in eval mode; its previous mode is restored) over `loader` (phase `eval`
    of an active training profile)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    with phase("eval"):
        try:
            for i, (x, y) in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                correct += count_correct(model(x), y)
                total += len(y)
        finally:
            model.train(was_training)
    if total == 0:
        raise ValueError("evaluate_accuracy: the loader yielded no batches")
    return correct / total
