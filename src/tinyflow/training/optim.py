"""Optimizer and learning-rate schedule construction (one place, so every trainer uses the same recipe)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from tinyflow.errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")


def param_groups(model: nn.Module, weight_decay: float, no_decay_names: tuple[str, ...] = ()) -> list[dict]:
    """Weight decay on conv / linear weights only; none on BatchNorm parameters and biases (they are 1-D), nor on
    parameters whose name contains one of `no_decay_names` (e.g. OFA's kernel transforms: decaying them would pull
    them from identity towards zero)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            skip = p.ndim <= 1 or any(part in name for part in no_decay_names)
            (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(
    params: nn.Module | Iterable,
    name: str = "sgd",
    lr: float = 0.05,
    weight_decay: float = 4e-5,
    momentum: float = 0.9,
    nesterov: bool = True,
) -> torch.optim.Optimizer:
    """`sgd` (momentum, Nesterov) or `adamw`; a module gets `param_groups` (no decay on norms and biases)."""
    groups = param_groups(params, weight_decay) if isinstance(params, nn.Module) else params
    if lr <= 0:
        raise ConfigError(f"trainer.lr must be positive, got {lr}")
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, weight_decay=weight_decay
        )
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"trainer.optimizer = {name!r} is unknown; use one of {', '.join(OPTIMIZERS)}")


def cosine_lr(base: float, step: int, total: int, warmup: int = 0, min_lr_ratio: float = 0.0) -> float:
    """The rate at `step` of `total`: linear warm-up from ~0 over `warmup` steps, then cosine decay from `base` to
    `min_lr_ratio` × `base`."""
    if step < warmup:
        return base * (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: linear warm-up from ~0, then cosine decay to `min_lr_ratio` × the base rate."""
    total_steps = max(1, int(total_steps))
    warmup_steps = max(0, min(int(warmup_steps), total_steps - 1))

    def factor(step: int) -> float:
        return cosine_lr(1.0, step, total_steps, warmup_steps, min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
