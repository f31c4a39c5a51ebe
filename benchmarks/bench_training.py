"""Training throughput: tinyflow's Lightning training step vs a plain PyTorch loop on the same work.

Two pairs, each measured side by side in this one process:

- **standalone**: the largest subnet of the default search space (conf/search_space/mcunet.yaml bound to the
  default data) as a `StaticNet`, trained by the standalone recipe (`ClassifierModule`) vs by hand, from the same
  initial weights, on the same DataLoader (batch size, augmentation), with the same optimizer (SGD + Nesterov),
  per-step cosine schedule, label smoothing and gradient clipping.
- **ofa**: the `ofa` trainer's sandwich step (`OfaModule` in its most expensive phase, the last one: the largest +
  the phase's smallest + its random subnets per batch, distillation from the largest, one backward over the
  summed loss, clipping, SGD) vs the same step written by hand on the same `ElasticSupernet` (same initial weights,
  channels-last, the same subnets drawn per step).

Rounds alternate plain / Lightning so background load hits both alike; each round times `--batches` steady-state
steps after `--warmup` untimed ones; the result is the median over rounds of Lightning / plain. Lightning runs as in
real use: progress bar on, per-step `self.log`, the TrackerCallback (standalone), the train stage's training profile
(`tinyflow.training.profile`) active. Images/s per core = images/s ÷ torch intra-op threads.

    .venv/bin/python benchmarks/bench_training.py [--batches 20] [--warmup 3] [--rounds 3] [--threads 1]
        [--which standalone|ofa|both]
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import tempfile
import time
from dataclasses import replace
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
from tinyflow.training import profile
from tinyflow.training.callbacks import TrackerCallback
from tinyflow.training.classifier import ClassifierModule, Recipe
from tinyflow.training.lightning import make_trainer, seed_all
from tinyflow.training.optim import build_optimizer, cosine_lr, cosine_schedule, param_groups
from tinyflow_plugins.trainers.ofa_module import NO_DECAY, OfaModule, soft_cross_entropy
from tinyflow_plugins.trainers.ofa_phases import Phase, parse_phases
from tinyflow_plugins.trainers.ofa_runtime import channels_last


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


class BenchOfaModule(OfaModule):
    """The `ofa` trainer's module, its per-epoch evaluation and checkpoint left out (they are not steps)."""

    def on_train_epoch_end(self) -> None:
        pass


def sandwich_archs(space: Any, phase: Phase, seed: int, step: int) -> list[Any]:
    """The subnets of a sandwich step: largest, the phase's smallest, its random ones (drawn as the trainer does)."""
    sub = phase.subspace(space)
    rng = random.Random(seed * 1_000_003 + step)
    archs = [space.max_arch(), sub.min_arch()] + [sub.sample(rng) for _ in range(phase.random_subnets)]
    unique: dict[str, Any] = {}
    for a in archs:
        unique.setdefault(a.key(), a)
    return list(unique.values())


def plain_ofa_loop(
    net: torch.nn.Module, loader: Any, phase: Phase, options: Any, steps: int
) -> list[tuple[float, float]]:
    """The sandwich step written by hand (what `OfaModule.training_step` computes); a timestamp after every step."""
    o = options
    groups = param_groups(net, o.weight_decay, no_decay_names=NO_DECAY)
    optimizer = build_optimizer(groups, o.optimizer, phase.lr, o.weight_decay, o.momentum, o.nesterov)
    net.train()
    stamps = []
    for step, (x, y) in enumerate(islice(loader, steps)):
        if o.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(phase.lr, step, steps)
        optimizer.zero_grad()
        teacher = None
        total = x.new_zeros(())
        shared = net.prefix(x)  # the layers every subnet runs alike, once per step (as OfaModule)
        for arch in sandwich_archs(net.space, phase, o.seed, step):
            net.set_active(arch)
            logits = net.suffix(shared)
            loss = F.cross_entropy(logits, y, label_smoothing=o.label_smoothing)
            if teacher is None:
                teacher = logits.detach()
            elif o.kd_ratio > 0:
                loss = loss + o.kd_ratio * soft_cross_entropy(logits, teacher, o.kd_temperature)
            total = total + loss
        total.backward()
        if o.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip)
        optimizer.step()
        stamps.append(now())
    return stamps


def lightning_ofa_loop(
    module: OfaModule, data: Any, steps: int, workdir: str
) -> tuple[list[tuple[float, float]], profile.TrainingProfile]:
    clock = StepClock()
    with profile.activate() as prof:  # as in the train stage: its ProfileCallback rides along
        trainer = make_trainer(1, workdir, [clock], limit_train_batches=steps, limit_val_batches=0, deterministic=True)
        trainer.fit(module, train_dataloaders=data.train_dataloader())
    return clock.stamps, prof


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
    parser.add_argument("--which", choices=("standalone", "ofa", "both"), default="both")
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
    steps = args.warmup + args.batches
    n_batches = len(data.train_dataloader())
    if steps > n_batches:
        raise SystemExit(f"--warmup + --batches = {steps} exceeds one epoch ({n_batches} batches)")
    threads = torch.get_num_threads()
    print(
        f"search_space={space.name} w{space.width_mult} r{arch.resolution}; data={data.name} batch {data.batch_size};"
        f" torch threads {threads}; {args.rounds} rounds x {args.batches} timed steps (+{args.warmup} warm-up)"
    )
    with tempfile.TemporaryDirectory() as workdir:
        if args.which in ("standalone", "both"):
            bench_standalone(args, data, arch, workdir, threads)
        if args.which in ("ofa", "both"):
            bench_ofa(args, cfg, data, space, workdir, threads)


def rounds(args: Any, batch_size: int, threads: int, plain: Any, light: Any, name: str, key: str) -> None:
    """Alternate plain / Lightning rounds (`plain(r)` / `light(r)` return per-step timestamps); print each round
    and the medians: images/s and per core, the ratio (wall and per CPU-second)."""
    plain_ips, light_ips, ratios, cpu_ratios = [], [], [], []
    for r in range(args.rounds):
        p_stamps = plain(r)
        l_stamps = light(r)
        plain_ips.append(images_per_s(p_stamps, args.warmup, batch_size))
        light_ips.append(images_per_s(l_stamps, args.warmup, batch_size))
        ratios.append(light_ips[-1] / plain_ips[-1])
        cpu_ratios.append(
            images_per_s(l_stamps, args.warmup, batch_size, clock=1)
            / images_per_s(p_stamps, args.warmup, batch_size, clock=1)
        )
        print(
            f"{name} round {r}: plain {plain_ips[-1]:8.1f} img/s  lightning {light_ips[-1]:8.1f} img/s  ratio "
            f"{ratios[-1]:.3f}  (per CPU-second: {cpu_ratios[-1]:.3f})"
        )
    p, li = statistics.median(plain_ips), statistics.median(light_ips)
    print(
        f"{name} median: plain {p:.1f} img/s ({p / threads:.1f} per core), tinyflow/lightning {li:.1f} img/s "
        f"({li / threads:.1f} per core) with {threads} thread(s) (target: lightning >= 0.9 x plain)"
    )
    cpu = statistics.median(cpu_ratios)
    print(f"{name} median ratio per CPU-second (insensitive to other processes' load): {cpu:.3f}")
    # the median of per-round ratios: each pair ran back to back, under the same background load
    print(f"{key}: {statistics.median(ratios):.3f} ratio")


def bench_standalone(args: Any, data: Any, arch: Any, workdir: str, threads: int) -> None:
    recipe = Recipe(warmup_epochs=0, save_checkpoints=False)
    seed_all(0)
    initial = StaticNet(arch)
    params = sum(p.numel() for p in initial.parameters())
    steps = args.warmup + args.batches
    print(f"standalone: the largest subnet, {len(arch.blocks)} blocks, {params:,} params")

    def plain(r: int) -> list[tuple[float, float]]:
        seed_all(r)
        return plain_loop(copy.deepcopy(initial), data.train_dataloader(), recipe, steps)

    def light(r: int) -> list[tuple[float, float]]:
        seed_all(r)
        with profile.activate():
            return lightning_loop(copy.deepcopy(initial), data, recipe, steps, workdir)

    rounds(args, data.batch_size, threads, plain, light, "standalone", "lightning_vs_plain_throughput")


def bench_ofa(args: Any, cfg: Any, data: Any, space: Any, workdir: str, threads: int) -> None:
    trainer = build_plugin(cfg, "trainer")  # the default `ofa` trainer's options and phases
    options = trainer.options
    phases = parse_phases(trainer.raw_phases, space)
    phase = replace(phases[-1], epochs=1, sort_channels=False)  # the last phase: the most subnets per step
    steps = args.warmup + args.batches
    seed_all(0)
    initial = BenchOfaModule(space, [phase], options, data)
    if options.channels_last:
        channels_last(initial.supernet)
    n_subnets = len(sandwich_archs(space, phase, options.seed, 0))
    params = sum(p.numel() for p in initial.supernet.parameters())
    print(
        f"ofa sandwich step (phase {phase.name}: largest + smallest + {phase.random_subnets} random = {n_subnets} "
        f"subnets per batch, distillation from the largest): supernet of {params:,} params"
    )

    def plain(r: int) -> list[tuple[float, float]]:
        seed_all(r)
        return plain_ofa_loop(copy.deepcopy(initial.supernet), data.train_dataloader(), phase, options, steps)

    last: list[profile.TrainingProfile] = []

    def light(r: int) -> list[tuple[float, float]]:
        seed_all(r)
        stamps, prof = lightning_ofa_loop(copy.deepcopy(initial), data, steps, workdir)
        last[:] = [prof]
        return stamps

    rounds(args, data.batch_size, threads, plain, light, "ofa", "ofa_sandwich_lightning_vs_plain_throughput")
    if last:
        print(last[0].summary("ofa lightning side, last round's profile"))


if __name__ == "__main__":
    main()
