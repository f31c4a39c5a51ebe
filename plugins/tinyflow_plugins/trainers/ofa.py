"""`ofa` trainer: once-for-all supernet training with progressive shrinking, driven by Lightning. It trains and
nothing else; `tinyflow.supernet.Supernet` loads what it writes to evaluate and extract subnets.

One Lightning fit runs every phase back to back (`full → kernel → depth → expand`, `ofa_phases`); the phase
follows from the epoch. Each step trains the largest subnet on the labels and the smallest plus N random subnets
of the phase on the labels and the largest's soft targets (sandwich rule, in-place distillation), with one
backward pass over the summed loss, gradient clipping and a per-phase cosine learning rate (`ofa_module`). Every
epoch, rank 0 recalibrates BatchNorm and measures the val accuracy of the largest, the smallest and a fixed random
subnet, logs it to the tracker, and a checkpoint is written atomically (`last.ckpt`) so `resume=true` continues at
the next epoch. DDP and other run-time glue: `ofa_runtime`.

`stem=rnnpool` trains the supernet with an RNNPool stem (`tinyflow.nn.elastic`), its options those of the configured
`scheduler=rnnpool` (`stem_options`); the checkpoint records the resolved stem, and `Supernet.load` rebuilds it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from tinyflow.arch.rnnpool import RNNPoolOptions
from tinyflow.arch.space import MBConvSpace
from tinyflow.atomic import atomic_copy
from tinyflow.contracts import TrainResult
from tinyflow.errors import CheckpointError, ConfigError
from tinyflow.nn.elastic import resolve_stem, space_to_dict
from tinyflow.supernet.checkpoint import CKPT_KEY, read_checkpoint, stem_of, supernet_state
from tinyflow.training.budget import EpochBudget, epoch_budget
from tinyflow.training.checkpoint import load_weights
from tinyflow.training.lightning import make_trainer, seed_all
from tinyflow_plugins.trainers.ofa_module import LAST_CKPT, OfaModule, OfaOptions
from tinyflow_plugins.trainers.ofa_phases import Phase, parse_phases, scale_epochs
from tinyflow_plugins.trainers.ofa_runtime import (
    channels_last,
    ddp_strategy,
    history_figure,
    replay,
    share_checkpoint,
    spawns,
)

FINAL_CKPT = "supernet.ckpt"

__all__ = ["FINAL_CKPT", "LAST_CKPT", "OfaModule", "OfaOptions", "OfaTrainer", "Phase", "parse_phases", "scale_epochs"]


class OfaTrainer:
    """The `ofa` trainer plugin (contracts.Trainer): `fit` returns a `TrainResult` of kind `supernet`."""

    name = "ofa"

    def __init__(
        self,
        phases: list[dict[str, Any]],
        resume: bool = False,
        accelerator: str = "cpu",
        devices: int = 1,
        strategy: str = "auto",
        num_nodes: int = 1,
        progress: bool = True,
        callbacks: list[pl.Callback] | None = None,
        stem: str = "conv",
        stem_options: Any = None,
        **options: Any,
    ):
        self.stem_config = stem_config(stem, stem_options)
        known = set(OfaOptions.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"trainer (ofa): unknown option(s) {unknown}; known: {sorted(known)}")
        self.options = OfaOptions(**options)
        if self.options.val_every not in ("epoch", "phase"):
            raise ConfigError(
                f"trainer.val_every = {self.options.val_every!r}: give 'epoch' (the per-epoch figures after every "
                "epoch) or 'phase' (after each phase's last epoch)"
            )
        self.raw_phases = [dict(p) for p in phases]
        self.resume = bool(resume)
        self.accelerator, self.devices, self.strategy, self.num_nodes = accelerator, devices, strategy, num_nodes
        self.progress = progress
        self.callbacks = list(callbacks or [])
        self.module: OfaModule | None = None

    def training_space(self, space: Any) -> Any:
        """The space the supernet trains for `space`: with an RNNPool stem, the stages before its cut pinned."""
        if not isinstance(space, MBConvSpace):
            return space
        return resolve_stem(space, **self.stem_config)[0]

    def phases_and_budget(self, space: MBConvSpace) -> tuple[list[Phase], EpochBudget]:
        """The phases trained on `space` and the epoch budget behind them: `trainer.epochs` (or the phases' own)
        spread over the phases, lowered to the compute of `trainer.epochs_at_resolution` when the space's
        resolution is larger (`tinyflow.training.budget`), at least one epoch per phase."""
        if self.options.resolutions:
            space = space.with_resolutions(self.options.resolutions)
        phases = scale_epochs(parse_phases(self.raw_phases, space), self.options.epochs)
        active = sum(1 for p in phases if p.epochs > 0)
        configured = sum(p.epochs for p in phases)
        budget = epoch_budget(configured, self.options.epochs_at_resolution, space.resolutions, minimum=active)
        if budget.scaled:
            phases = scale_epochs(phases, budget.effective)
        return phases, budget

    def epoch_budget(self, space: MBConvSpace) -> EpochBudget:
        """The epochs `fit` trains on `space` and why (`EpochBudget.reason`)."""
        return self.phases_and_budget(space)[1]

    def fit(self, space: MBConvSpace, data: Any, workdir: str, tracker: Any) -> TrainResult:
        """Train the supernet of `space` on `data`; the checkpoint and the final accuracies of the largest, smallest
        and fixed random subnet (plus `epochs`, and `resumed_from_epoch` when it resumed)."""
        if not isinstance(space, MBConvSpace):
            raise ConfigError(
                f"trainer=ofa needs an elastic MBConv space (search_space=mcunet); got {type(space).__name__}"
            )
        phases, budget = self.phases_and_budget(space)
        if self.options.resolutions:  # elastic resolution: the checkpoint's space carries the choices
            space = space.with_resolutions(self.options.resolutions)
        self._prepare_data(space, data)
        workdir_p = Path(workdir)
        workdir_p.mkdir(parents=True, exist_ok=True)
        last = workdir_p / LAST_CKPT
        ckpt_path = None
        if self.resume and last.exists():
            self._check_resumable(last, space, self.stem_config)
            ckpt_path = str(last)
        seed_all(self.options.seed)
        module = OfaModule(space, phases, self.options, data, stem=self.stem_config)
        if self.options.channels_last:
            channels_last(module.supernet)
        strategy = ddp_strategy(self.strategy, self.accelerator)
        spawned = spawns(strategy)
        module.tracker = None if spawned else tracker
        trainer = make_trainer(
            sum(p.epochs for p in phases),
            str(workdir_p),
            list(self.callbacks),
            accelerator=self.accelerator,
            devices=self.devices,
            num_nodes=self.num_nodes,
            strategy=strategy,
            enable_progress_bar=self.progress,
            limit_train_batches=self.options.limit_train_batches,
            limit_val_batches=0,
            deterministic=True,
        )
        tracker.log_params(
            {
                "trainer": {
                    "name": self.name,
                    "phases": [asdict(p) for p in phases],
                    **asdict(self.options),
                    "stem": module.supernet.stem_config,
                    "epochs_effective": budget.effective,
                    "epochs_reason": budget.reason,
                }
            }
        )
        start_epoch = int(read_checkpoint(ckpt_path)[CKPT_KEY]["epochs_done"]) if ckpt_path else 0
        t0 = time.perf_counter()
        try:
            trainer.fit(module, train_dataloaders=data.train_dataloader(), ckpt_path=ckpt_path, weights_only=False)
        except BaseException:
            if spawned and last.exists():  # the epochs the workers finished still reach the tracker
                replay(tracker, read_checkpoint(last)[CKPT_KEY]["history"], start_epoch)
            raise
        wall = time.perf_counter() - t0
        share_checkpoint(last)  # torchrun across nodes: rank 0 wrote it on its own disk
        # weights and history from disk: the same path whether training ran here or in spawned DDP workers
        ckpt = read_checkpoint(last)
        load_weights(module.supernet, supernet_state(ckpt), source=str(last))
        history = ckpt[CKPT_KEY]["history"]
        if spawned:
            replay(tracker, history, start_epoch)
        final = workdir_p / FINAL_CKPT
        atomic_copy(last, final)
        self.module = module
        end = history[-1] if history else {}
        metrics = {k: float(v) for k, v in end.items() if k.startswith("val_acc") or k == "val_images"}
        metrics["epochs"] = float(ckpt[CKPT_KEY]["epochs_done"])
        if ckpt_path:
            metrics["resumed_from_epoch"] = float(start_epoch)
        tracker.log_metrics({"wall_time_s_fit": wall}, step=int(metrics["epochs"]))
        if history:
            tracker.log_figure(history_figure(history), "ofa_val_accuracy.png")
        return TrainResult(kind="supernet", checkpoint=str(final), metrics=metrics, wall_time_s=wall)

    def _prepare_data(self, space: MBConvSpace, data: Any) -> None:
        data.setup()
        for attr in ("in_channels", "num_classes"):
            if getattr(data, attr) != getattr(space, attr):
                raise ConfigError(
                    f"search_space.{attr} = {getattr(space, attr)} but data '{data.name}' has "
                    f"{getattr(data, attr)}; bind the space to the data (space.bind(data))"
                )
        data.set_resolution(space.resolution)
        if self.options.batch_size is not None:
            if self.options.batch_size < 2:
                raise ConfigError(f"trainer.batch_size must be at least 2 (BatchNorm), got {self.options.batch_size}")
            data.batch_size = int(self.options.batch_size)

    def _check_resumable(self, path: Path, space: MBConvSpace, stem: dict[str, Any]) -> None:
        ckpt = read_checkpoint(path)
        want_space, want_stem = resolve_stem(space, **stem)
        if stem_of(ckpt) != want_stem:
            raise CheckpointError(
                f"trainer.resume: {path} was trained with the stem {stem_of(ckpt)}, not {want_stem}. Resume with the "
                "same trainer.stem (and scheduler=rnnpool options), or turn trainer.resume off to train from scratch."
            )
        saved, want = ckpt[CKPT_KEY]["space"], space_to_dict(want_space)
        if saved != want:
            diff = sorted(k for k in saved if saved.get(k) != want.get(k))
            raise CheckpointError(
                f"trainer.resume: {path} was trained for another search space (differs in {diff}). Resume with "
                "the same search_space options, or turn trainer.resume off to train from scratch."
            )


def stem_config(stem: str, options: Any) -> dict[str, Any]:
    """`ElasticSupernet` stem keywords from `trainer.stem` and `trainer.stem_options`.

    `stem_options` is what the config passes (the `scheduler` node while `stem` is not conv, built here), a scheduler
    object with `RNNPoolOptions` as `.options`, `RNNPoolOptions`, or a mapping of its fields.
    """
    if stem == "conv":
        return {"stem": "conv"}
    if stem != "rnnpool":
        raise ConfigError(f"trainer.stem must be conv or rnnpool, got {stem!r}.")
    if isinstance(options, Mapping) and "_target_" in options:
        from hydra.utils import instantiate

        options = instantiate(dict(options), _convert_="partial")
    opts = getattr(options, "options", options)
    if isinstance(opts, Mapping):
        opts = RNNPoolOptions.from_config(opts)
    if not isinstance(opts, RNNPoolOptions):
        got = getattr(options, "name", type(options).__name__) if options is not None else "none"
        raise ConfigError(
            f"trainer.stem=rnnpool takes the RNNPool options (cut, patch, stride, hidden1, hidden2, ...) of "
            f"scheduler=rnnpool, but the configured scheduler is {got!r}. Add scheduler=rnnpool (with the same "
            "options it will deploy), or set trainer.stem=conv."
        )
    return {"stem": "rnnpool", "rnnpool": asdict(opts)}
