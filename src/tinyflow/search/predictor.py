"""Accuracy predictor (OFA): an MLP on the one-hot arch encoding, trained on (arch, measured accuracy) pairs.

Its worth is its ranking, not its absolute error: `fit` cross-validates it — the pairs split into `folds`, each
fold predicted by an MLP trained on the others — and reports Spearman's rho (with its 95 % interval) and Kendall's
tau between predicted and measured accuracy over *all* pairs, each predicted once by a model that never saw it.
A single 20 % hold-out of 200 pairs ranks 40 of them, a rho that is itself ± 0.15 wide (the first default runs
logged 0.46–0.63 for the same setting); pooled over 200 pairs it is ± 0.1. The MLP the search then uses is trained
on all the pairs.
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
from tinyflow.confidence import spearman_interval
from tinyflow.errors import ConfigError
from tinyflow.forked import fork_map


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
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_samples", "hidden", "layers", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"strategy.predictor.{name} must be ≥ 1, got {getattr(self, name)}.")
        if int(self.folds) < 2:
            raise ConfigError(f"strategy.predictor.folds must be ≥ 2 (cross-validation folds), got {self.folds}.")
        if self.n_samples < self.min_pairs:
            raise ConfigError(
                f"strategy.predictor: n_samples={self.n_samples} is too few for folds={self.folds} (at least two "
                "pairs per fold); raise n_samples or lower folds."
            )

    @property
    def min_pairs(self) -> int:
        """The fewest pairs `fit` cross-validates: two per fold."""
        return 2 * int(self.folds)


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

    def fit(self, archs: Sequence[Arch], accuracies: Sequence[float], workers: int = 1) -> dict[str, float]:
        """Cross-validate over `folds` folds, then train on all pairs; return the out-of-fold Spearman (with its
        95 % interval), Kendall and RMSE over all pairs. The `folds` + 1 fits are independent: `workers` forked
        processes of one thread each share them (`tinyflow.forked`; the same numbers as one after the other)."""
        c = self.config
        n = len(archs)
        if n != len(accuracies) or n < c.min_pairs:
            raise ConfigError(
                f"predictor: need ≥ {c.min_pairs} (arch, accuracy) pairs of equal length for {c.folds} folds, got {n}."
            )
        idx = list(range(n))
        random.Random(c.seed).shuffle(idx)
        folds = [sorted(idx[k :: int(c.folds)]) for k in range(int(c.folds))]
        x = self._x(archs)
        y = torch.tensor(accuracies, dtype=torch.float32)

        def fit_one(job: int) -> Any:
            if job == 0:  # the model the search uses: all pairs (first, as the longest fit)
                model, mean, std = self._train(x, y, idx, c.seed)
                return {k: v.numpy() for k, v in model.state_dict().items()}, mean, std
            held = folds[job - 1]
            held_set = set(held)
            model, mean, std = self._train(x, y, [i for i in idx if i not in held_set], c.seed + job)
            return _predict(model, x[held], mean, std)

        out_of_fold = np.empty(n, dtype=np.float64)
        for job, result in enumerate(fork_map(fit_one, len(folds) + 1, workers)):
            if job == 0:
                state, self._mean, self._std = result
                self.model = self._build(x.shape[1])
                self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
                self.model.eval()
            else:
                out_of_fold[folds[job - 1]] = result
        true = y.numpy().astype(np.float64)
        rho = float(spearmanr(out_of_fold, true).statistic)
        low, high = spearman_interval(rho, n) if np.isfinite(rho) else (float("nan"), float("nan"))
        self.metrics = {
            "predictor_spearman": rho,
            "predictor_spearman_ci95_low": low,
            "predictor_spearman_ci95_high": high,
            "predictor_kendall": float(kendalltau(out_of_fold, true).statistic),
            "predictor_rmse": float(np.sqrt(np.mean((out_of_fold - true) ** 2))),
            "predictor_folds": float(len(folds)),
            "predictor_train_pairs": float(n - max(len(f) for f in folds)),
            "predictor_test_pairs": float(n),
        }
        return self.metrics

    def _train(
        self, x: torch.Tensor, y: torch.Tensor, rows: Sequence[int], seed: int
    ) -> tuple[nn.Sequential, float, float]:
        """An MLP fit to the standardised accuracies of `rows`, with the mean and sd it standardised by."""
        c = self.config
        rows = list(rows)
        mean = float(y[rows].mean())
        sd = float(y[rows].std()) if len(rows) > 1 else 0.0
        std = sd if sd > 0 else 1.0
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        model = self._build(x.shape[1])
        opt = torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c.epochs)
        xt, yt = x[rows], (y[rows] - mean) / std
        model.train()
        for _ in range(c.epochs):
            perm = torch.randperm(len(rows), generator=gen)
            for s in range(0, len(rows), c.batch_size):
                b = perm[s : s + c.batch_size]
                loss = nn.functional.mse_loss(model(xt[b]).squeeze(1), yt[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
        return model.eval(), mean, std

    def _predict_x(self, x: torch.Tensor) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("AccuracyPredictor.predict called before fit")
        return _predict(self.model, x, self._mean, self._std)

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


#: consecutive draws without a new subnet after which `sample_pairs` stops looking
STALE_DRAWS = 200


def _predict(model: nn.Sequential, x: torch.Tensor, mean: float, std: float) -> np.ndarray:
    with torch.no_grad():
        return (model(x).squeeze(1) * std + mean).numpy()


def sample_pairs(
    sample: Callable[[random.Random], Arch],
    accuracy: Callable[[Arch], float],
    n: int,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    measure_many: Callable[..., list[float]] | None = None,
) -> tuple[list[Arch], list[float]]:
    """Sample `n` distinct archs and measure each (the predictor's training set); `measure_many(archs, progress)`,
    when given, measures them all in one call instead of `accuracy` one by one. Fewer than `n` when `STALE_DRAWS`
    draws in a row find no new arch (a budget that few subnets fit)."""
    rng = random.Random(seed)
    seen: dict[str, Arch] = {}
    tries = stale = 0
    # at a budget only a handful of subnets fit, draws stop finding new ones: give up after STALE_DRAWS in a row
    while len(seen) < n and tries < 50 * n and stale < STALE_DRAWS:
        tries += 1
        a = sample(rng)
        stale = stale + 1 if a.key() in seen else 0
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
