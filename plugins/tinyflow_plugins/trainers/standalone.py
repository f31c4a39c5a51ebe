"""Trainer plugin `standalone`: trains one fixed arch (`StaticNet`) from scratch or from given weights.

For baselines (`trainer=standalone stages=[train]` trains the space's `arch`, default its largest member) and
as the recipe of the `finetune` stage. `fit` returns a `TrainResult` of kind `model` (its `model.pt` and the
network it is); `evaluate(arch, split)` scores the trained network.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tinyflow.arch.genome import Arch
from tinyflow.contracts import DataModule, SearchSpace, TrainResult
from tinyflow.errors import ConfigError, TinyflowError
from tinyflow.nn.static import StaticNet
from tinyflow.training.budget import EpochBudget, epoch_budget
from tinyflow.training.checkpoint import read_model
from tinyflow.training.classifier import Recipe, fit_static
from tinyflow.training.evaluation import evaluate_accuracy


class StandaloneTrainer:
    """Cross-entropy training of one static network with the shared recipe (`tinyflow.training.classifier`).

    `arch`: `max` | `min` (of the space given to `fit`), a genome `{depths, kernels, expands}` of that space, or
    a full `Arch` dict. `init_weights`: a `model.pt`, a Lightning `.ckpt` or a raw state_dict file to start from.
    Every other option is a `Recipe` field (epochs, optimizer, lr, …).
    """

    name = "standalone"

    def __init__(
        self,
        arch: Any = "max",
        init_weights: str | None = None,
        resume: bool = False,
        model_builder: Any = None,  # builder(arch, dropout=) -> nn.Module; None = StaticNet (e.g. RNNPoolNet)
        epochs_at_resolution: int | None = None,  # the epochs are the compute budget at this resolution
        **recipe: Any,
    ) -> None:
        self.model_builder = model_builder or StaticNet
        self.recipe = Recipe.from_options(dict(recipe), where="trainer")
        self.arch_spec = arch
        self.init_weights = init_weights
        self.epochs_at_resolution = epochs_at_resolution
        self.configured_epochs = self.recipe.epochs  # `fit` may lower the recipe's epochs (epoch_budget)
        self.resume = bool(resume)
        self.model: StaticNet | None = None
        self.arch: Arch | None = None
        self.data: Any = None
        self.result: dict[str, Any] = {}

    # ---- Trainer contract ----------------------------------------------------------------------------
    def training_space(self, space: SearchSpace) -> SearchSpace:
        """The space as given (one arch of it is trained)."""
        return space

    def epoch_budget(self, space: SearchSpace) -> EpochBudget:
        """The epochs `fit` trains the arch for and why (`trainer.epochs_at_resolution`, tinyflow.training.budget)."""
        arch = self.resolve_arch(space)
        return epoch_budget(self.configured_epochs, self.epochs_at_resolution, arch.resolution)

    def fit(self, space: SearchSpace, data: DataModule, workdir: str, tracker: Any) -> TrainResult:
        budget = self.epoch_budget(space)
        self.recipe = replace(self.recipe, epochs=budget.effective)
        tracker.log_params({"trainer.epochs_effective": budget.effective, "trainer.epochs_reason": budget.reason})
        result = self.fit_arch(self.resolve_arch(space), data, workdir, tracker)
        metrics = {
            k: float(result[k]) for k in ("val_accuracy", "best_epoch_val_accuracy", "epochs", "train_images_per_s")
        }
        return TrainResult(
            kind="model",
            checkpoint=result["checkpoint"],
            metrics=metrics,
            wall_time_s=float(result["wall_time_s"]),
            network=result["network"],
        )

    def evaluate(self, arch: Arch, split: str = "val") -> float:
        """Accuracy in [0, 1] of the trained network on `split`; `arch` must be the one that was trained."""
        if self.model is None or self.arch is None:
            raise TinyflowError("trainer=standalone: evaluate() before fit(); train the arch first")
        if arch.key() != self.arch.key():
            raise ConfigError(
                "trainer=standalone: evaluate() was given another arch than the one it trained; the standalone "
                "trainer scores only its own network (use trainer=ofa to score any subnet of a supernet)"
            )
        self.data.set_resolution(arch.resolution)
        return evaluate_accuracy(self.model, self.data.loader(split))

    # ---- the work -----------------------------------------------------------------------------------------
    def resolve_arch(self, space: SearchSpace) -> Arch:
        spec = self.arch_spec
        if isinstance(spec, Arch):
            return spec
        if spec in ("max", "min"):
            return space.max_arch() if spec == "max" else space.min_arch()
        if isinstance(spec, dict) or hasattr(spec, "keys"):
            spec = dict(spec)
            if "blocks" in spec:
                return Arch.from_dict(spec)
            if "depths" in spec and hasattr(space, "from_genome"):
                return space.from_genome(spec)
        raise ConfigError(
            f"trainer.arch = {spec!r}: use 'max', 'min', a genome {{depths, kernels, expands}} or an Arch dict"
        )

    def fit_arch(
        self,
        arch: Arch,
        data: DataModule,
        workdir: str | Path,
        tracker: Any,
        init_state: dict[str, torch.Tensor] | None = None,
        prefix: str = "",
    ) -> dict[str, Any]:
        """Train `arch` on `data` (at the arch's resolution) and write `workdir/model.pt` atomically; the recipe's
        result (`val_accuracy`, `history`, `checkpoint`, `network`, ...)."""
        source = "init_state"
        if init_state is None and self.init_weights:
            source = str(self.init_weights)
            init_state = read_model(self.init_weights).state_dict
        tracker.log_params({"trainer": self.name})
        model, result = fit_static(
            arch,
            data,
            self.recipe,
            workdir,
            tracker,
            init_state,
            source,
            prefix=prefix,
            resume=self.resume,
            model_builder=self.model_builder,
        )
        self.model, self.arch, self.data, self.result = model, arch, data, result
        return result
