"""Stage `train`: train the search space's supernet (e.g. `trainer=ofa`) or one fixed arch (`trainer=standalone`).

Builds the data, the search space (re-targeted to the width multiplier and resolution that the `space` stage
chose, and bound to the data's channels and classes) and the trainer, fits, and records what the trainer's
`TrainResult` says it produced: a supernet (its checkpoint, for `search` and `finetune`) or a model (its `model.pt`
and network, for `quantize` / `deploy`), with the trainer's final figures: each validation accuracy with its 95 %
Wilson interval (`<name>_ci95_low/high`) over the `val_images` it was measured on (tinyflow.confidence).

The epochs follow the trainer's compute budget (`trainer.epochs_at_resolution`, tinyflow.training.budget: logged as
`train.epochs_effective` with the tag `train.epochs_reason`), and the stage is profiled (tinyflow.training.profile):
seconds per phase (`train.profile.<phase>_s` / `_share`, per subnet `train.profile.<phase>.<subnet>_s`), images/s
and images/s per core, and one printed line at the end.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tinyflow.atomic import atomic_copy
from tinyflow.confidence import ci_metrics, dataset_size
from tinyflow.context import RunContext
from tinyflow.contracts import TrainResult
from tinyflow.metrics_vocabulary import figures, intervals, record
from tinyflow.network import DeployedNetwork
from tinyflow.network_memory import network_memory
from tinyflow.plugins import build_plugin
from tinyflow.stages import stage
from tinyflow.tracking import active_tracker
from tinyflow.training.cache import train_cache, train_key
from tinyflow.training.profile import TrainingProfile
from tinyflow.training.profile import activate as activate_profile
from tinyflow.training.profile import enter as profile_enter
from tinyflow.training.profile import phase as profile_phase
from tinyflow.training.remote_cache import shared_training

log = logging.getLogger(__name__)


def build_space(cfg: DictConfig, ctx: RunContext, data: Any) -> Any:
    """The configured search space at the context's (width, resolution), bound to the data."""
    space = build_plugin(cfg, "search_space")
    if ctx.width_mult is not None and ctx.resolution is not None:
        space = space.with_width_resolution(ctx.width_mult, ctx.resolution)
    if ctx.resolutions:  # the range the space stage chose: elastic resolution, the search picks within it
        space = space.with_resolutions(ctx.resolutions)
    data.setup()
    return space.bind(data)


@stage("train")
def run(cfg: DictConfig, ctx: RunContext) -> RunContext:
    with activate_profile() as prof:
        ctx, trained = train(cfg, ctx)
    report_profile(prof, trained)
    return ctx


def report_profile(prof: TrainingProfile, trained: bool) -> None:
    """The stage's training profile (tinyflow.training.profile) to the stage's run (`train.profile.*`) and one
    logged line."""
    tracker = active_tracker()
    label = "train profile" if trained else "train profile (cache hit: no training)"
    line = prof.summary(label)
    metrics = prof.metrics()
    try:
        tracker.log_metrics(metrics)  # the stage's run only: a job that reused the training has no profile,
        # and the parent runs of a sweep carry the same metric names (MLflow's compare view lines them up)
        tracker.log_text(line + "\n", "train_profile.txt")
    except Exception as exc:  # logging the profile must never fail a finished training
        log.warning("train: the training profile was not logged (%s: %s)", type(exc).__name__, exc)
    log.info("%s", line)  # Hydra's job logging prints it (and keeps it in the job's log file)


def train(cfg: DictConfig, ctx: RunContext) -> tuple[RunContext, bool]:
    """The stage's work; whether it trained (false: the train cache's result was reused)."""
    data = build_plugin(cfg, "data")
    space = build_space(cfg, ctx, data)
    trainer = build_plugin(cfg, "trainer")
    if cfg.get("resume") not in (None, False, "false"):
        trainer.resume = True  # a resumed pipeline also continues an interrupted training from its last checkpoint
        carry_checkpoints(ctx)
    tracker = active_tracker()
    tracker.log_params(
        {
            "train.space": space.name,
            "train.width_mult": space.width_mult,
            "train.resolution": space.resolution,
        }
    )
    log_budget(trainer, space, tracker)
    result = fit_or_reuse(cfg, ctx, trainer, space, data, tracker)
    profile_enter("other")  # the figures after the training
    if result.kind == "supernet":
        ctx.supernet_checkpoint = result.checkpoint
        metrics = {f"supernet_{k}": float(v) for k, v in result.metrics.items() if k.startswith("val_acc_")}
    else:  # a fixed arch: its model is what finetune / quantize / deploy use
        ctx.model_checkpoint = result.checkpoint
        if result.network is not None:
            ctx.network = dict(result.network)
            ctx.arch = dict(result.network["arch"])
        metrics = {"train_val_accuracy": float(result.metrics["val_accuracy"])}
    # the images the trainer's final accuracies were measured on (`val_images`: the OFA trainer's per-epoch figures
    # use the val split's first trainer.val_images), else the whole val split
    n_val = int(result.metrics["val_images"]) if "val_images" in result.metrics else dataset_size(data.val_dataloader())
    for name, value in list(metrics.items()):
        metrics |= ci_metrics(name, value, n_val)
    if n_val is not None:
        metrics["val_images"] = float(n_val)
    metrics["train_wall_time_s"] = float(result.wall_time_s)
    metrics["train_cache_hit"] = float(result.cache_hit)
    ctx.metrics.update(metrics)
    tracker.log_metrics(metrics)
    tracker.log_parent_metrics(metrics)
    log.info("train: %s", ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    log_memory_accuracy(cfg, ctx, tracker, trainer, space, result, n_val)
    return ctx, not result.cache_hit


def log_budget(trainer: Any, space: Any, tracker: Any) -> None:
    """The epochs the trainer will train and why (`trainer.epochs_at_resolution`, tinyflow.training.budget):
    metrics `train.epochs_configured` / `train.epochs_effective` (the stage's run), tag `train.epochs_reason` (both)."""
    budget_of = getattr(trainer, "epoch_budget", None)
    if budget_of is None:  # a trainer plugin without one trains its epochs as configured
        return
    budget = budget_of(space)
    metrics = budget.metrics()
    tracker.log_metrics(metrics)  # the stage's run: MLflow's compare view of a sweep's parent runs plots the first
    # metric a parent run logged, which should stay a result (accuracy), not a setting logged before training
    tracker.set_tags({"train.epochs_reason": budget.reason})
    tracker.set_tags({"train.epochs_reason": budget.reason}, parent=False)
    log.info("train: %d epochs: %s", budget.effective, budget.reason)


def log_memory_accuracy(
    cfg: DictConfig, ctx: RunContext, tracker: Any, trainer: Any, space: Any, result: Any, n_val: int | None = None
) -> None:
    """The shared names: a supernet's largest and smallest subnets' SRAM and flash (the configured scheduler's
    costs) beside their accuracy (`largest.*`, `smallest.*`); a model's own SRAM, flash and accuracy; each accuracy's
    95 % interval over the `n_val` validation images."""
    if result.kind == "supernet":
        from tinyflow.plugins import build_device
        from tinyflow.stages.space import scheduler_costs

        values: dict[str, float] = {}
        try:
            trained = trainer.training_space(space)
            costs = scheduler_costs(cfg, build_device(cfg))
            archs = {"largest": trained.max_arch(), "smallest": trained.min_arch()}
            for label, arch in archs.items():
                c = costs(arch)
                values.update(figures(label, sram_peak=c.peak_sram, flash=c.flash))
        except Exception as exc:  # logging must never fail the stage
            log.warning("train: no memory of the largest/smallest subnets (%s: %s)", type(exc).__name__, exc)
        for label in ("largest", "smallest"):
            acc = result.metrics.get(f"val_acc_{label}")
            values.update(figures(label, accuracy_float=acc))
            values.update(intervals(label, n=n_val, accuracy_float=acc))
        record(ctx, tracker, "train", values, prefix="largest")
        return
    values = {}
    if result.network is not None:
        values.update(network_memory(cfg, DeployedNetwork.from_dict(result.network)))
    values.update(figures(accuracy_float=result.metrics.get("val_accuracy")))
    values.update(intervals(n=n_val, accuracy_float=result.metrics.get("val_accuracy")))
    record(ctx, tracker, "train", values)


def carry_checkpoints(ctx: RunContext) -> None:
    """Copy the interrupted run's training folder (`<run>/train/`: the trainer's `last.ckpt` and the rest) into this
    run's, so the trainer — which looks in its own workdir — continues from the last finished epoch. Nothing to do
    when this job resumes its own folder (`resume=true`) or the earlier run never reached `train`."""
    source = ctx.extra.get("resumed_from")
    if not source:
        return
    src, dst = Path(source) / "train", Path(ctx.output_dir) / "train"
    if not src.is_dir() or src.resolve() == dst.resolve():
        return
    copied = 0
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_file() and not target.exists():
            atomic_copy(path, target)
            copied += 1
    log.info("train: resuming the training of %s (%d files copied from %s)", source, copied, src)


def fit_or_reuse(cfg: DictConfig, ctx: RunContext, trainer: Any, space: Any, data: Any, tracker: Any) -> TrainResult:
    """Train, or — with `cache.train` on and an equal training already done — reuse that training's result.

    A reused result keeps the original training's `wall_time_s` (the stage's child run has its own `wall_time_s`).
    """
    workdir = str(Path(ctx.output_dir) / "train")
    cache = train_cache(cfg)
    if cache is None:
        return trainer.fit(space, data, workdir, tracker)
    key = train_key(cfg, ctx.width_mult, ctx.resolutions or ctx.resolution)  # the range, when there is one
    tracker.set_tags({"train.cache_key": key})
    t0 = time.perf_counter()
    # shared_training: through a tracking server, also with jobs on other machines (docs/design.md §16)
    with profile_phase("cache"), cache.lock(key), shared_training(tracker, cache, key):
        result = cache.lookup(key, workdir)
        if result is not None:
            source = cache.source(key)
            log.info(
                "train: reusing the training of run %s (%s) — same data, space, trainer, seed and code (cache key %s"
                " in %s); set cache.train=false to train again",
                source.get("mlflow_run_id", "?"),
                source.get("output_dir", "?"),
                key,
                cache.root,
            )
            tracker.set_tags({"train.cache": "hit", "train.cache_source_run": str(source.get("mlflow_run_id", ""))})
            log.info("train: cache lookup and copy took %.1f s", time.perf_counter() - t0)
            return result
        from tinyflow.training.callbacks import RESUMES  # Lightning: imported once the job trains

        resumes = len(RESUMES)
        with profile_phase("setup"):  # the timeline's phases until the first step, then the fit's own
            result = trainer.fit(space, data, workdir, tracker)
        tracker.set_tags({"train.cache": "miss"})
        if not all(RESUMES[resumes:]):
            log.warning("train: resumed without the random generators' state; the result is not cached")
            return result
        source = {"output_dir": str(ctx.output_dir), "mlflow_run_id": str(tracker.parent_id or "")}
        with contextlib.suppress(OSError):  # a full or read-only cache disk must not fail a finished training
            cache.store(key, result, source)
        return result
