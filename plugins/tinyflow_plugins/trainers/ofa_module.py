"""The `ofa` trainer's LightningModule: the supernet under manual optimization, sandwich rule + in-place
distillation, the phase following from the epoch, per-epoch BN-recalibrated accuracies and checkpoint entries."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from tinyflow.arch.genome import Arch
from tinyflow.arch.space import MBConvSpace
from tinyflow.nn.elastic import ElasticSupernet, space_to_dict
from tinyflow.supernet.checkpoint import CKPT_KEY
from tinyflow.supernet.evaluation import SubnetEvaluator
from tinyflow.training import profile
from tinyflow.training.evaluation import nhwc
from tinyflow.training.optim import build_optimizer, cosine_lr, param_groups
from tinyflow_plugins.trainers.ofa_phases import Phase
from tinyflow_plugins.trainers.ofa_runtime import log_record

LAST_CKPT = "last.ckpt"
#: parameters never weight-decayed besides 1-D ones: kernel transforms start at identity, decay pulls them to zero
NO_DECAY = ("transforms",)


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
    val_images: int | None = 1000  # the per-epoch figures: subnets scored on the val split's first this many
    val_every: str = "phase"  # "epoch": the figures after every epoch; "phase": after each phase's last epoch
    seed: int = 0
    batch_size: int | None = None  # training batch size for the supernet (sets data.batch_size); null: the data's
    epochs: int | None = None  # total epoch budget spread over the phases (null: each phase's own epochs)
    epochs_at_resolution: int | None = None  # the epochs are the compute budget at this resolution (training.budget)
    resolutions: list[int] | None = None  # elastic resolution (the space's choices; one drawn per batch); null: fixed
    channels_last: bool = True  # NHWC: 2-3x faster depthwise convs (and their weight gradients) on CPU
    limit_train_batches: int | float | None = None


def soft_cross_entropy(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross entropy against the teacher's softened distribution (×T² keeps gradients comparable across T)."""
    target = F.softmax(teacher / temperature, dim=1)
    return -(target * F.log_softmax(logits / temperature, dim=1)).sum(1).mean() * temperature**2


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


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
        draws the same ones — all at one resolution drawn for the step when the space's is elastic. Duplicates are
        dropped."""
        sub = phase.subspace(self.space)
        rng = random.Random(self.options.seed * 1_000_003 + step)
        archs = [self.space.max_arch(), sub.min_arch()]
        archs += [sub.sample(rng) for _ in range(phase.random_subnets)]
        if self.space.elastic_resolution:  # OFA: one input resolution per batch, shared by the step's subnets
            r = int(rng.choice(self.space.resolutions))
            archs = [replace(a, resolution=r, genome={**a.genome, "resolution": r}) for a in archs]
        unique: dict[str, Arch] = {}
        for a in archs:
            unique.setdefault(a.key(), a)
        return list(unique.values())

    # ---- Lightning hooks ------------------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.options
        groups = param_groups(self.supernet, o.weight_decay, no_decay_names=NO_DECAY)
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
            x = nhwc(x)
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
        # the layers every subnet runs alike (stem, RNNPool, first block) see the same images with the same weights
        # and batch statistics: computed once per resolution and shared by the step's subnets (their gradients
        # meet there and flow back once), the same math as one pass per subnet, 5-7 % less per kernel/expand step
        shared: dict[int, torch.Tensor] = {}
        for arch in self.step_archs(phase, int(self.global_step)):
            self.supernet.set_active(arch)
            r = phase.step_resolution(arch.resolution)
            if r not in shared:
                shared[r] = self.supernet.prefix(x if x.shape[-1] == r else _resize(x, r))
            logits = self.supernet.suffix(shared[r])
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
            scored = ""
            if self.evaluates(epoch):
                for label, arch in self.eval_archs.items():
                    with profile.subnet(label):  # BN recalibration and evaluation per subnet in the training profile
                        hits = self.evaluator.correct(arch, "val", self.options.val_images)
                    record[f"val_acc_{label}"] = int(hits.sum()) / len(hits)  # as SubnetEvaluator.accuracy
                    record["val_images"] = len(hits)  # the figures' n: their intervals (train stage)
                scored = "val acc " + " ".join(f"{k} {record[f'val_acc_{k}']:.4f}" for k in self.eval_archs) + " "
            record["train_loss"] = self._loss_sum / max(1, self._loss_n)
            record["epoch_time_s"] = time.perf_counter() - self._t0
            record["global_step"] = int(self.global_step)
            self.history.append(record)
            if self.tracker is not None:
                log_record(self.tracker, record)
            print(
                f"[ofa] epoch {epoch} phase {phase.name}: {scored}loss {record['train_loss']:.3f} "
                f"({record['epoch_time_s']:.1f}s)",
                flush=True,
            )
        # every rank calls it (it synchronises); only rank 0 writes, through the atomic checkpoint IO
        with profile.phase("checkpoint"):
            self.trainer.save_checkpoint(Path(self.trainer.default_root_dir) / LAST_CKPT, weights_only=False)

    def evaluates(self, epoch: int) -> bool:
        """Whether the per-epoch figures are measured after `epoch`: every epoch (`val_every: epoch`), else at the
        end of each phase (the last epoch is always one)."""
        _, phase, within = self.phase_at(epoch)
        return self.options.val_every == "epoch" or within + 1 >= phase.epochs

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The entries `tinyflow.supernet` rebuilds the supernet from, and this trainer's progress."""
        epochs_total = sum(p.epochs for p in self.phases)
        done = int(self.current_epoch) + 1
        checkpoint[CKPT_KEY] = {
            "format": 1,
            "space": space_to_dict(self.space),
            "stem": self.supernet.stem_config,
            "dropout": float(self.options.dropout),
            "evaluation": {"recalib_batches": int(self.options.recalib_batches), "seed": int(self.options.seed)},
            "phases": [asdict(p) for p in self.phases],
            "epochs_done": done,
            "phase": self.phase_at(done - 1)[1].name,
            "complete": done >= epochs_total,
            "history": list(self.history),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get(CKPT_KEY, {}).get("history", []))
