"""`ofa` trainer: once-for-all supernet training with progressive shrinking, driven by Lightning.

One Lightning fit runs every phase back to back (`full → kernel → depth → expand`); the phase follows from the
epoch. Each step trains the largest subnet on the labels and the smallest plus N random subnets of the phase on
the labels and the largest's soft targets (sandwich rule, in-place distillation), with one backward pass over
the summed loss, gradient clipping and a per-phase cosine learning rate. Every epoch, rank 0 recalibrates
BatchNorm and measures the val accuracy of the largest, the smallest and a fixed random subnet, logs it to the
tracker, and a checkpoint is written atomically (`last.ckpt`) so `resume=true` continues at the next epoch.

`stem=rnnpool` trains the supernet with an RNNPool stem (`tinyflow.nn.elastic`), its options those of the configured
`scheduler=rnnpool` (`stem_options`); the checkpoint records the resolved stem, and `load` rebuilds it from there.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from tinyflow.arch.genome import Arch
from tinyflow.arch.rnnpool import RNNPoolOptions
from tinyflow.arch.space import MBConvSpace
from tinyflow.context import atomic_copy
from tinyflow.errors import CheckpointError, ConfigError
from tinyflow.nn.calibration import recalibrate_bn
from tinyflow.nn.elastic import ElasticSupernet, resolve_stem, space_to_dict
from tinyflow.nn.rnnpool_net import RNNPoolNet
from tinyflow.nn.static import StaticNet
from tinyflow.nn.supernet_checkpoint import CKPT_KEY, read_checkpoint, stem_of, supernet_state
from tinyflow.training.checkpoint import load_weights
from tinyflow.training.evaluation import evaluate_accuracy
from tinyflow.training.lightning import make_trainer, seed_all
from tinyflow.training.optim import build_optimizer

LAST_CKPT = "last.ckpt"
FINAL_CKPT = "supernet.ckpt"


@dataclass
class Phase:
    """One progressive-shrinking phase. A choice list of null means all of the space's choices."""

    name: str
    epochs: int
    lr: float
    random_subnets: int = 0  # subnets sampled per step besides the largest and the smallest
    kernel: list[int] | None = None
    depth: list[int] | None = None
    expand: list[int] | None = None
    sort_channels: bool = False  # re-sort hidden channels by importance when the phase starts (expand phase)

    def subspace(self, space: MBConvSpace) -> MBConvSpace:
        return replace(
            space,
            kernel_choices=tuple(self.kernel or space.kernel_choices),
            depth_choices=tuple(self.depth or space.depth_choices),
            expand_choices=tuple(self.expand or space.expand_choices),
        )


def parse_phases(phases: Any, space: MBConvSpace) -> list[Phase]:
    """Phases from config, checked against the space; ConfigError naming the phase and field."""
    out: list[Phase] = []
    known = set(Phase.__dataclass_fields__)
    for i, raw in enumerate(phases or []):
        raw = dict(raw)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"trainer.phases[{i}]: unknown key(s) {unknown}; known: {sorted(known)}")
        try:
            phase = Phase(**raw)
        except TypeError as exc:
            raise ConfigError(f"trainer.phases[{i}]: {exc}") from None
        if phase.epochs < 0 or phase.lr <= 0 or phase.random_subnets < 0:
            raise ConfigError(
                f"trainer.phases[{i}] ({phase.name}): epochs and random_subnets must be >= 0 and lr > 0, got "
                f"epochs={phase.epochs}, lr={phase.lr}, random_subnets={phase.random_subnets}"
            )
        for fname, allowed in (
            ("kernel", space.kernel_choices),
            ("depth", space.depth_choices),
            ("expand", space.expand_choices),
        ):
            bad = [v for v in (getattr(phase, fname) or []) if v not in allowed]
            if bad:
                raise ConfigError(
                    f"trainer.phases[{i}].{fname} ({phase.name}) = {getattr(phase, fname)}: {bad} not in the "
                    f"space's choices {list(allowed)}"
                )
        out.append(phase)
    if not out or sum(p.epochs for p in out) == 0:
        raise ConfigError("trainer.phases: give at least one phase with epochs > 0")
    return out


def scale_epochs(phases: list[Phase], total: int | None) -> list[Phase]:
    """Spread a total epoch budget (`trainer.epochs`, the same key as the standalone trainer's) over the phases in
    proportion to their configured epochs, at least one each; null keeps the phases' own epochs."""
    if total is None:
        return phases
    active = [p for p in phases if p.epochs > 0]
    if total < len(active):
        raise ConfigError(
            f"trainer.epochs = {total} is fewer than the {len(active)} phases with epochs; give at least "
            f"{len(active)}, or null to use each phase's own epochs"
        )
    configured = sum(p.epochs for p in active)
    share = {id(p): p.epochs * total / configured for p in active}
    alloc = {id(p): max(1, math.floor(share[id(p)])) for p in active}
    while sum(alloc.values()) > total:
        big = max((p for p in active if alloc[id(p)] > 1), key=lambda p: alloc[id(p)] - share[id(p)])
        alloc[id(big)] -= 1
    while sum(alloc.values()) < total:
        short = max(active, key=lambda p: share[id(p)] - alloc[id(p)])
        alloc[id(short)] += 1
    return [replace(p, epochs=alloc.get(id(p), 0)) for p in phases]


def cosine_lr(base: float, step: int, total: int, warmup: int = 0) -> float:
    if step < warmup:
        return base * (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def soft_cross_entropy(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross entropy against the teacher's softened distribution (×T² keeps gradients comparable across T)."""
    target = F.softmax(teacher / temperature, dim=1)
    return -(target * F.log_softmax(logits / temperature, dim=1)).sum(1).mean() * temperature**2


class SubnetEvaluator:
    """Accuracy of a subnet of the supernet on a split, after BatchNorm recalibration on a few train batches."""

    def __init__(self, supernet: ElasticSupernet, data: Any, recalib_batches: int, seed: int):
        self.supernet = supernet
        self.data = data
        self.recalib_batches = max(1, int(recalib_batches))
        self.seed = seed
        self.base_resolution = supernet.space.resolution
        self._calib: dict[int, list[torch.Tensor]] = {}

    def calibration_batches(self, resolution: int) -> list[torch.Tensor]:
        """The same train images every time, cached per resolution: un-augmented (like the images evaluated)
        when the data module offers `calibration_batch`, else the first shuffled train batches (seeded)."""
        if resolution not in self._calib:
            with torch.random.fork_rng(), _resolution(self.data, resolution, self.base_resolution):
                torch.manual_seed(self.seed)
                batch_size = int(getattr(self.data, "batch_size", 128))
                if hasattr(self.data, "calibration_batch"):
                    images = self.data.calibration_batch(self.recalib_batches * batch_size, split="train")
                    batches = list(images.split(batch_size))
                else:
                    batches = []
                    for x, _ in self.data.train_dataloader():
                        batches.append(x)
                        if len(batches) >= self.recalib_batches:
                            break
            self._calib[resolution] = [b for b in batches if len(b) > 1]  # BatchNorm needs 2+ samples
        return self._calib[resolution]

    def loader(self, split: str) -> Any:
        if split not in ("train", "val", "test"):
            raise ConfigError(f"evaluate: split must be train, val or test, got {split!r}")
        return getattr(self.data, f"{split}_dataloader")()

    def accuracy(self, arch: Arch, split: str = "val") -> float:
        net = self.supernet
        was_training = net.training
        try:
            net.set_active(arch)
            recalibrate_bn(net, self.calibration_batches(arch.resolution))
            with _resolution(self.data, arch.resolution, self.base_resolution):
                return evaluate_accuracy(net, self.loader(split))
        finally:
            net.train(was_training)


class _resolution:
    """Context: the data module serves `resolution` inside, `base` after."""

    def __init__(self, data: Any, resolution: int, base: int):
        self.data, self.resolution, self.base = data, resolution, base

    def __enter__(self) -> None:
        if self.resolution != self.base:
            self.data.set_resolution(self.resolution)

    def __exit__(self, *exc: Any) -> None:
        if self.resolution != self.base:
            self.data.set_resolution(self.base)


@dataclass
class OfaOptions:
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3e-5
    kd_ratio: float = 1.0
    label_smoothing: float = 0.0
    kd_temperature: float = 1.0
    grad_clip: float | None = 5.0
    warmup_epochs: float = 0.0
    dropout: float = 0.0
    recalib_batches: int = 4
    seed: int = 0
    batch_size: int | None = None  # training batch size for the supernet (sets data.batch_size); null: the data's
    epochs: int | None = None  # total epoch budget spread over the phases (null: each phase's own epochs)
    resolutions: list[int] | None = None  # elastic resolution: random subnets draw one per step (null: fixed)
    channels_last: bool = True  # NHWC: 2-3x faster depthwise convs (and their weight gradients) on CPU
    limit_train_batches: int | float | None = None


class OfaModule(pl.LightningModule):
    """The supernet under manual optimization: sandwich rule + in-place distillation, phases by epoch."""

    def __init__(
        self,
        space: MBConvSpace,
        phases: list[Phase],
        options: OfaOptions,
        data: Any,
        stem: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.phases = phases
        self.options = options
        self.supernet = ElasticSupernet(space, dropout=options.dropout, **(stem or {}))
        space = self.space = self.supernet.space  # an RNNPool stem pins the stages it drops
        self.evaluator = SubnetEvaluator(self.supernet, data, options.recalib_batches, options.seed)
        self.eval_archs = {
            "largest": space.max_arch(),
            "smallest": space.min_arch(),
            "random": space.sample(random.Random(options.seed + 7919)),
        }
        self.history: list[dict[str, Any]] = []
        self.tracker: Any = None  # set in-process only (a spawned DDP worker replays history afterwards)
        self._loss_sum = 0.0
        self._loss_n = 0
        self._t0 = 0.0

    # ---- phases -------------------------------------------------------------------------------------------
    def phase_at(self, epoch: int) -> tuple[int, Phase, int]:
        """(phase index, phase, epoch within the phase) of a global epoch."""
        start = 0
        for i, phase in enumerate(self.phases):
            if epoch < start + phase.epochs:
                return i, phase, epoch - start
            start += phase.epochs
        return len(self.phases) - 1, self.phases[-1], self.phases[-1].epochs - 1

    def step_archs(self, phase: Phase, step: int) -> list[Arch]:
        """Largest, smallest of the phase, then random subnets — seeded by the global step, so every DDP rank
        draws the same ones. Duplicates are dropped."""
        sub = phase.subspace(self.space)
        rng = random.Random(self.options.seed * 1_000_003 + step)
        archs = [self.space.max_arch(), sub.min_arch()]
        for _ in range(phase.random_subnets):
            arch = sub.sample(rng)
            if self.options.resolutions:
                arch = replace(arch, resolution=int(rng.choice(self.options.resolutions)))
            archs.append(arch)
        unique: dict[str, Arch] = {}
        for a in archs:
            unique.setdefault(a.key(), a)
        return list(unique.values())

    # ---- Lightning hooks ------------------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.options
        decay, no_decay = [], []
        for name, p in self.supernet.named_parameters():
            # kernel transforms are matrices but decaying them would pull them away from identity towards zero
            (no_decay if p.ndim <= 1 or "transforms" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return build_optimizer(groups, o.optimizer, self.phases[0].lr, o.weight_decay, o.momentum, o.nesterov)

    def on_train_epoch_start(self) -> None:
        _, phase, within = self.phase_at(self.current_epoch)
        if within == 0:
            if phase.sort_channels:
                self.supernet.sort_channels()
            # momentum buffers belong to the old phase (and to the old channel order after a sort)
            self.optimizers().optimizer.state.clear()
        self._loss_sum, self._loss_n, self._t0 = 0.0, 0, time.perf_counter()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        index, phase, within = self.phase_at(self.current_epoch)
        nb = max(1, int(self.trainer.num_training_batches))
        warmup = round(self.options.warmup_epochs * nb) if index == 0 else 0
        lr = cosine_lr(phase.lr, within * nb + batch_idx, phase.epochs * nb, warmup)
        opt = self.optimizers()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        teacher: torch.Tensor | None = None
        total = x.new_zeros(())
        for arch in self.step_archs(phase, int(self.global_step)):
            self.supernet.set_active(arch)
            inp = x if x.shape[-1] == arch.resolution else _resize(x, arch.resolution)
            logits = self.supernet(inp)
            loss = F.cross_entropy(logits, y, label_smoothing=self.options.label_smoothing)
            if teacher is None:
                teacher = logits.detach()
            elif self.options.kd_ratio > 0:
                loss = loss + self.options.kd_ratio * soft_cross_entropy(logits, teacher, self.options.kd_temperature)
            total = total + loss
        self.manual_backward(total)
        if self.options.grad_clip:
            self.clip_gradients(opt, gradient_clip_val=self.options.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        self._loss_sum += float(total.detach())
        self._loss_n += 1
        self.log("loss", total.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=len(y))
        self.log("lr", lr, prog_bar=True, on_step=True, on_epoch=False, batch_size=len(y))
        return total.detach()

    def on_train_epoch_end(self) -> None:
        epoch = int(self.current_epoch)
        index, phase, _ = self.phase_at(epoch)
        if self.trainer.is_global_zero:
            record: dict[str, Any] = {"epoch": epoch, "phase": phase.name, "phase_index": index}
            for label, arch in self.eval_archs.items():
                record[f"val_acc_{label}"] = self.evaluator.accuracy(arch, "val")
            record["train_loss"] = self._loss_sum / max(1, self._loss_n)
            record["epoch_time_s"] = time.perf_counter() - self._t0
            record["global_step"] = int(self.global_step)
            self.history.append(record)
            if self.tracker is not None:
                log_record(self.tracker, record)
            print(
                f"[ofa] epoch {epoch} phase {phase.name}: val acc largest {record['val_acc_largest']:.4f} "
                f"smallest {record['val_acc_smallest']:.4f} random {record['val_acc_random']:.4f} "
                f"loss {record['train_loss']:.3f} ({record['epoch_time_s']:.1f}s)",
                flush=True,
            )
        # every rank calls it (it synchronises); only rank 0 writes, through the atomic checkpoint IO
        self.trainer.save_checkpoint(Path(self.trainer.default_root_dir) / LAST_CKPT, weights_only=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        epochs_total = sum(p.epochs for p in self.phases)
        done = int(self.current_epoch) + 1
        checkpoint[CKPT_KEY] = {
            "format": 1,
            "space": space_to_dict(self.space),
            "stem": self.supernet.stem_config,
            "dropout": float(self.options.dropout),
            "phases": [asdict(p) for p in self.phases],
            "epochs_done": done,
            "phase": self.phase_at(done - 1)[1].name,
            "complete": done >= epochs_total,
            "history": list(self.history),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get(CKPT_KEY, {}).get("history", []))


def log_record(tracker: Any, record: dict[str, Any]) -> None:
    """One epoch's figures to the tracker, step = global epoch; also under the phase's name."""
    step = int(record["epoch"])
    values = {k: float(v) for k, v in record.items() if isinstance(v, int | float) and k != "epoch"}
    phased = {f"{record['phase']}.{k}": v for k, v in values.items() if k.startswith("val_acc")}
    tracker.log_metrics({**values, **phased}, step=step)


def _replay(tracker: Any, history: list[dict[str, Any]], start_epoch: int) -> None:
    """Log the epochs a spawned DDP run trained (rank 0 of a spawned run cannot reach this process's tracker)."""
    for record in history:
        if record["epoch"] >= start_epoch:
            log_record(tracker, record)


def history_figure(history: list[dict[str, Any]]) -> Any:
    """Val accuracy of the largest, smallest and fixed random subnet per epoch, phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = [h["epoch"] for h in history]
    for label in ("largest", "smallest", "random"):
        ax.plot(epochs, [100 * h[f"val_acc_{label}"] for h in history], marker="o", label=label)
    start = 0
    for i, h in enumerate([*history, {"phase": None}]):
        if i == len(history) or (i > 0 and h["phase"] != history[i - 1]["phase"]):
            ax.axvspan(epochs[start] - 0.5, epochs[i - 1] + 0.5, alpha=0.08 * (1 + start % 2), color="grey")
            ax.text(epochs[start] - 0.4, ax.get_ylim()[0], history[start]["phase"], fontsize=8, va="bottom")
            start = i
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy (%), BN recalibrated")
    ax.set_title("once-for-all supernet: progressive shrinking")
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


class OfaTrainer:
    """The `ofa` trainer plugin (contracts.Trainer)."""

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
        self.raw_phases = [dict(p) for p in phases]
        self.resume = bool(resume)
        self.accelerator, self.devices, self.strategy, self.num_nodes = accelerator, devices, strategy, num_nodes
        self.progress = progress
        self.callbacks = list(callbacks or [])
        self.module: OfaModule | None = None
        self.checkpoint: str | None = None
        self._cache: dict[tuple[str, str], float] = {}

    # ---- training -----------------------------------------------------------------------------------------
    def fit(self, space: MBConvSpace, data: Any, workdir: str, tracker: Any) -> dict[str, Any]:
        """Train the supernet of `space` on `data`; returns the checkpoint path and the final accuracies."""
        if not isinstance(space, MBConvSpace):
            raise ConfigError(
                f"trainer=ofa needs an elastic MBConv space (search_space=mcunet); got {type(space).__name__}"
            )
        phases = scale_epochs(parse_phases(self.raw_phases, space), self.options.epochs)
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
            _channels_last(module.supernet)
        spawn = self._spawns()
        module.tracker = None if spawn else tracker
        trainer = make_trainer(
            sum(p.epochs for p in phases),
            str(workdir_p),
            list(self.callbacks),
            accelerator=self.accelerator,
            devices=self.devices,
            num_nodes=self.num_nodes,
            strategy=self._strategy(),
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
                }
            }
        )
        start_epoch = _epochs_done(ckpt_path)
        t0 = time.perf_counter()
        try:
            trainer.fit(module, train_dataloaders=data.train_dataloader(), ckpt_path=ckpt_path, weights_only=False)
        except BaseException:
            if spawn and last.exists():  # the epochs the workers finished still reach the tracker
                _replay(tracker, read_checkpoint(last)[CKPT_KEY]["history"], start_epoch)
            raise
        wall = time.perf_counter() - t0
        # weights and history from disk: the same path whether training ran here or in spawned DDP workers
        ckpt = read_checkpoint(last)
        load_weights(module.supernet, supernet_state(ckpt), source=str(last))
        history = ckpt[CKPT_KEY]["history"]
        if spawn:
            _replay(tracker, history, start_epoch)
        final = workdir_p / FINAL_CKPT
        atomic_copy(last, final)
        self.module, self.checkpoint, self._cache = module, str(final), {}
        end = history[-1] if history else {}
        result = {
            "checkpoint": str(final),
            "epochs": ckpt[CKPT_KEY]["epochs_done"],
            "resumed_from_epoch": start_epoch if ckpt_path else None,
            "wall_time_s": wall,
            "history": history,
            **{k: v for k, v in end.items() if k.startswith("val_acc")},
        }
        tracker.log_metrics({"wall_time_s_fit": wall}, step=result["epochs"])
        if history:
            tracker.log_figure(history_figure(history), "ofa_val_accuracy.png")
        return result

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

    def _spawns(self) -> bool:
        return (
            isinstance(self._strategy(), pl.strategies.DDPStrategy)
            and not _launched_externally()
            and (self._strategy()._start_method in ("spawn", "fork", "forkserver"))
        )

    def _strategy(self) -> Any:
        """`ddp` on CPU means: find unused parameters (each subnet uses part of the supernet), gloo, and — unless
        torchrun already started the processes — spawn the workers from this process."""
        name = self.strategy if isinstance(self.strategy, str) else None
        if name is None or not name.startswith("ddp"):
            return self.strategy
        start = "popen" if _launched_externally() else ("fork" if name == "ddp_fork" else "spawn")
        return pl.strategies.DDPStrategy(
            find_unused_parameters=True,
            process_group_backend="gloo" if self.accelerator == "cpu" else None,
            start_method=start,
        )

    # ---- using the trained supernet ---------------------------------------------------------------------------
    def load(self, space: MBConvSpace, data: Any, checkpoint: str) -> None:
        """Load a trained supernet checkpoint so `evaluate` / `extract` work without training. The stem is the
        checkpoint's (whatever `trainer.stem` says now)."""
        ckpt = read_checkpoint(checkpoint)
        stem = stem_of(ckpt)
        self._check_resumable(Path(checkpoint), space, stem)
        phases = parse_phases(ckpt[CKPT_KEY]["phases"], space)
        data.setup()
        data.set_resolution(space.resolution)
        module = OfaModule(space, phases, self.options, data, stem=stem)
        load_weights(module.supernet, supernet_state(ckpt), source=str(checkpoint))
        self.module, self.checkpoint, self._cache = module, str(checkpoint), {}

    def evaluate(self, arch: Arch, split: str = "val") -> float:
        """Accuracy of subnet `arch` on `split` after BatchNorm recalibration (cached per arch and split)."""
        if self.module is None:
            raise ConfigError("trainer (ofa): evaluate() before fit() or load(); train or load a supernet first")
        key = (arch.key(), split)
        if key not in self._cache:
            self._cache[key] = self.module.evaluator.accuracy(arch, split)
        return self._cache[key]

    def extract(self, arch: Arch) -> StaticNet | RNNPoolNet:
        """The static network of `arch` with recalibrated BatchNorm statistics (eval mode); an `RNNPoolNet` when
        the supernet has an RNNPool stem."""
        if self.module is None:
            raise ConfigError("trainer (ofa): extract() before fit() or load()")
        ev = self.module.evaluator
        net = self.module.supernet.extract(arch)
        recalibrate_bn(net, ev.calibration_batches(arch.resolution))
        return net.eval()


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


def _channels_last(net: torch.nn.Module) -> None:
    """NHWC weights; weights with a size-1 channel dim (depthwise k×k, 1×1 convs) are the same bytes either way,
    and keeping them contiguous keeps DDP's gradient buckets in the layout autograd produces."""
    net.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 4 and (p.shape[1] == 1 or p.shape[2:] == (1, 1)):
                p.data = p.data.contiguous()


def _launched_externally() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ)


def _epochs_done(ckpt_path: str | None) -> int:
    return int(read_checkpoint(ckpt_path)[CKPT_KEY]["epochs_done"]) if ckpt_path else 0
