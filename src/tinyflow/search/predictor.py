"""Accuracy predictor (OFA): an MLP on the one-hot arch encoding, trained on (arch, measured accuracy) pairs.

Its worth is its ranking, not its absolute error: `fit` holds out a share of the pairs and reports Spearman's
rho and Kendall's tau between predicted and measured accuracy on them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr
from torch import nn

from tinyflow.arch.genome import Arch
from tinyflow.errors import ConfigError


@dataclass
class PredictorConfig:
    """OFA's predictor: 3 hidden layers of 400. `n_samples` pairs are measured to train it."""

    n_samples: int = 1000
    hidden: int = 400
    layers: int = 3
    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 128
    holdout: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_samples", "hidden", "layers", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"strategy.predictor.{name} must be ≥ 1, got {getattr(self, name)}.")
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"strategy.predictor.holdout must be in (0, 1), got {self.holdout}.")
        if self.n_samples * self.holdout < 3:
            raise ConfigError(
                f"strategy.predictor: n_samples={self.n_samples} × holdout={self.holdout} leaves fewer than 3 "
                "held-out pairs to rank; raise n_samples."
            )


class AccuracyPredictor:
    """`fit(archs, accuracies)` then `predict(arch)`; the target is standardised, predictions are not clipped."""

    def __init__(self, encode: Callable[[Arch], list[float]], config: PredictorConfig | None = None):
        self.encode = encode
        self.config = config or PredictorConfig()
        self.model: nn.Sequential | None = None
        self._mean, self._std = 0.0, 1.0
        self.metrics: dict[str, float] = {}

    def _build(self, n_in: int) -> nn.Sequential:
        c = self.config
        layers: list[nn.Module] = []
        width = n_in
        for _ in range(c.layers):
            layers += [nn.Linear(width, c.hidden), nn.ReLU()]
            width = c.hidden
        layers.append(nn.Linear(width, 1))
        return nn.Sequential(*layers)

    def _x(self, archs: Sequence[Arch]) -> torch.Tensor:
        return torch.tensor([self.encode(a) for a in archs], dtype=torch.float32)

    def fit(self, archs: Sequence[Arch], accuracies: Sequence[float]) -> dict[str, float]:
        """Train on all but a held-out share; return held-out Spearman, Kendall and RMSE (and train size)."""
        c = self.config
        if len(archs) != len(accuracies) or len(archs) < 4:
            raise ConfigError(f"predictor: need ≥ 4 (arch, accuracy) pairs of equal length, got {len(archs)}.")
        idx = list(range(len(archs)))
        random.Random(c.seed).shuffle(idx)
        n_test = max(3, round(len(idx) * c.holdout))
        test, train = idx[:n_test], idx[n_test:]
        x = self._x(archs)
        y = torch.tensor(accuracies, dtype=torch.float32)
        self._mean = float(y[train].mean())
        self._std = float(y[train].std()) if len(train) > 1 and float(y[train].std()) > 0 else 1.0
        gen = torch.Generator().manual_seed(c.seed)
        torch.manual_seed(c.seed)
        self.model = self._build(x.shape[1])
        opt = torch.optim.Adam(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c.epochs)
        xt, yt = x[train], (y[train] - self._mean) / self._std
        self.model.train()
        for _ in range(c.epochs):
            perm = torch.randperm(len(train), generator=gen)
            for s in range(0, len(train), c.batch_size):
                b = perm[s : s + c.batch_size]
                loss = nn.functional.mse_loss(self.model(xt[b]).squeeze(1), yt[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
        self.model.eval()
        pred = self._predict_x(x[test])
        true = y[test].numpy()
        self.metrics = {
            "predictor_spearman": float(spearmanr(pred, true).statistic),
            "predictor_kendall": float(kendalltau(pred, true).statistic),
            "predictor_rmse": float(np.sqrt(np.mean((pred - true) ** 2))),
            "predictor_train_pairs": float(len(train)),
            "predictor_test_pairs": float(len(test)),
        }
        return self.metrics

    def _predict_x(self, x: torch.Tensor) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("AccuracyPredictor.predict called before fit")
        with torch.no_grad():
            return (self.model(x).squeeze(1) * self._std + self._mean).numpy()

    def predict(self, arch: Arch) -> float:
        return float(self._predict_x(self._x([arch]))[0])

    def predict_many(self, archs: Sequence[Arch]) -> np.ndarray:
        return self._predict_x(self._x(archs))

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict() if self.model else None,
            "mean": self._mean,
            "std": self._std,
            "config": self.config.__dict__,
            "metrics": self.metrics,
        }


def sample_pairs(
    sample: Callable[[random.Random], Arch],
    accuracy: Callable[[Arch], float],
    n: int,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    measure_many: Callable[..., list[float]] | None = None,
) -> tuple[list[Arch], list[float]]:
    """Sample `n` distinct archs and measure each (the predictor's training set); `measure_many(archs, progress)`,
    when given, measures them all in one call instead of `accuracy` one by one."""
    rng = random.Random(seed)
    seen: dict[str, Arch] = {}
    tries = 0
    while len(seen) < n and tries < 50 * n:
        tries += 1
        a = sample(rng)
        seen.setdefault(a.key(), a)
    archs = list(seen.values())
    if measure_many is not None:  # all at once (e.g. spread over worker processes)
        return archs, [float(v) for v in measure_many(archs, progress)]
    accs = []
    for a in archs:
        accs.append(float(accuracy(a)))
        if progress:
            progress(1)
    return archs, accs
