"""Training throughput: the Lightning trainer (tinyflow's standalone recipe) vs a plain PyTorch loop.

Both train the largest subnet of the default search space (conf/search_space/mcunet.yaml bound to the default
data, mnist5k) as a `StaticNet`, from the same initial weights, on the same DataLoader (same batch size and
augmentation), with the same optimizer (SGD + Nesterov), per-step cosine schedule, label smoothing and gradient
clipping. Rounds alternate plain / Lightning so background load hits both alike; each round times `--batches`
steady-state steps after `--warmup` untimed ones; the result is the median over rounds of Lightning / plain.
Lightning runs as in real use: progress bar on, per-step `self.log`, the TrackerCallback.

    .venv/bin/python benchmarks/bench_training.py [--batches 20] [--warmup 3] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from itertools import islice
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import tinyflow
from tinyflow.nn.static import StaticNet
from tinyflow.plugins import build_plugin
from tinyflow.tracking import NullTracker
from tinyflow.training.callbacks import TrackerCallback
from tinyflow.training.classifier import ClassifierModule, Recipe
from tinyflow.training.lightning import make_trainer, seed_all
from tinyflow.training.optim import build_optimizer, cosine_schedule


class StepClock(pl.Callback):
    """Timestamps after every training batch (the Lightning side's stopwatch)."""

    def __init__(self) -> None:
        self.stamps: list[tuple[float, float]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.stamps.append(now())


def now() -> tuple[float, float]:
    """(wall clock, this process's CPU time: all its threads, so a progress-bar thread counts too)."""
    return time.perf_counter(), time.process_time()


def plain_loop(model: torch.nn.Module, loader: Any, recipe: Recipe, steps: int) -> list[tuple[float, float]]:
    """The same recipe written by hand; returns a timestamp after every step."""
    optimizer = build_optimizer(model, recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.momentum)
    schedule = cosine_schedule(optimizer, steps)
    model.train()
    stamps = []
    for x, y in islice(loader, steps):
        loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        schedule.step()
        stamps.append(now())
    return stamps


def lightning_loop(
    model: torch.nn.Module, data: Any, recipe: Recipe, steps: int, workdir: str
) -> list[tuple[float, float]]:
    clock = StepClock()
    trainer = make_trainer(
        1,
        workdir,
        [TrackerCallback(NullTracker()), clock],
        gradient_clip_val=recipe.grad_clip,
        limit_train_batches=steps,
        limit_val_batches=0,
        deterministic=recipe.deterministic,
    )
    trainer.fit(ClassifierModule(model, recipe), train_dataloaders=data.train_dataloader())
    return clock.stamps


def images_per_s(stamps: list[tuple[float, float]], warmup: int, batch_size: int, clock: int = 0) -> float:
    """Images per second of wall clock (`clock=0`) or of process CPU time (`clock=1`) over the timed steps."""
    timed = stamps[warmup - 1 :]  # from the end of the last warm-up step
    return (len(timed) - 1) * batch_size / (timed[-1][clock] - timed[0][clock])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3)
    # one intra-op thread by default: the ratio is about framework overhead, and on a shared 2-core machine two
    # OpenMP threads per process spin against other processes (measured ~8x slower for both loops)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads; 0 = torch's default")
    parser.add_argument("--batch-size", type=int, default=0, help="0 = the data config's")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config")
    if args.batch_size:
        cfg.data.batch_size = args.batch_size
    data = build_plugin(cfg, "data")
    data.setup("fit")
    space = build_plugin(cfg, "search_space")
    space = space.bind(data) if hasattr(space, "bind") else space
    arch = space.max_arch()
    data.set_resolution(arch.resolution)
    recipe = Recipe(warmup_epochs=0, save_checkpoints=False)
    seed_all(0)
    initial = StaticNet(arch)
    params = sum(p.numel() for p in initial.parameters())
    steps = args.warmup + args.batches
    n_batches = len(data.train_dataloader())
    if steps > n_batches:
        raise SystemExit(f"--warmup + --batches = {steps} exceeds one epoch ({n_batches} batches)")
    print(
        f"largest subnet of search_space={space.name}: w{space.width_mult} r{arch.resolution}, {len(arch.blocks)} "
        f"blocks, {params:,} params; data={data.name} batch {data.batch_size}; torch threads "
        f"{torch.get_num_threads()}; {args.rounds} rounds x {args.batches} timed steps (+{args.warmup} warm-up)"
    )

    plain, light, ratios, cpu_ratios = [], [], [], []
    with tempfile.TemporaryDirectory() as workdir:
        for r in range(args.rounds):
            seed_all(r)
            p_stamps = plain_loop(copy.deepcopy(initial), data.train_dataloader(), recipe, steps)
            plain.append(images_per_s(p_stamps, args.warmup, data.batch_size))
            seed_all(r)
            l_stamps = lightning_loop(copy.deepcopy(initial), data, recipe, steps, workdir)
            light.append(images_per_s(l_stamps, args.warmup, data.batch_size))
            ratios.append(light[-1] / plain[-1])
            cpu_ratios.append(
                images_per_s(l_stamps, args.warmup, data.batch_size, clock=1)
                / images_per_s(p_stamps, args.warmup, data.batch_size, clock=1)
            )
            print(
                f"round {r}: plain {plain[-1]:8.1f} img/s  lightning {light[-1]:8.1f} img/s  ratio {ratios[-1]:.3f}"
                f"  (per CPU-second: {cpu_ratios[-1]:.3f})"
            )

    p, li = statistics.median(plain), statistics.median(light)
    print(f"median: plain {p:.1f} img/s, lightning {li:.1f} img/s (target: lightning >= 0.9 x plain)")
    print(f"median ratio per CPU-second (insensitive to other processes' load): {statistics.median(cpu_ratios):.3f}")
    # the median of per-round ratios: each pair ran back to back, under the same background load
    print(f"lightning_vs_plain_throughput: {statistics.median(ratios):.3f} ratio")


if __name__ == "__main__":
    main()
