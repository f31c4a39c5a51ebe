"""Depthwise weight gradient: tinyflow's grouped forward conv (`tinyflow.nn.depthwise`) vs PyTorch's own, side by side.

1. Per layer: every depthwise layer of the default space's largest subnet at the default job's resolution (r48,
   batch 64, channels-last, kernels 5 and 7, as the OFA sandwich step meets them), the weight gradient timed both
   ways in alternating rounds; the median per layer and the ratio PyTorch ÷ tinyflow.
2. Per OFA step: the default trainer's last phase (largest + smallest + random subnets, distillation) on the
   default supernet, with the grouped gradient on and off (`MIN_KERNEL` raised past every kernel) in alternating
   rounds, same weights and batches; the ratio of the median step times, last line
   `ofa sandwich step, PyTorch's depthwise gradient ÷ tinyflow's: <x>`.

    .venv/bin/python benchmarks/bench_depthwise.py [--resolution 48] [--threads 2] [--rounds 5] [--steps 8]
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir

import tinyflow
from tinyflow.nn import depthwise
from tinyflow.plugins import build_plugin
from tinyflow.training.lightning import seed_all
from tinyflow_plugins.trainers.ofa_phases import parse_phases
from tinyflow_plugins.trainers.ofa_runtime import channels_last

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import BenchOfaModule, plain_ofa_loop


def layer_table(space, batch: int, rounds: int) -> None:
    arch = space.max_arch()
    side = arch.resolution // arch.stem_stride
    rows = []
    cb = torch.ops.aten.convolution_backward
    for block in arch.blocks:
        out_side = (side + block.stride - 1) // block.stride
        for kernel in (5, 7):
            c = block.hidden
            x = torch.randn(batch, c, side, side).contiguous(memory_format=torch.channels_last)
            w = torch.randn(c, 1, kernel, kernel)
            g = torch.randn(batch, c, out_side, out_side).contiguous(memory_format=torch.channels_last)
            s, p = block.stride, kernel // 2

            args = [[s, s], [p, p], [1, 1], False, [0, 0], c, [False, True, False]]
            native = functools.partial(cb, g, x, w, None, *args)
            grouped = functools.partial(depthwise.depthwise_weight_grad, x, g, kernel, s)
            t_native, t_grouped = alternate(native, grouped, rounds)
            used = kernel >= depthwise.MIN_KERNEL and depthwise.SIDES[0] <= side <= depthwise.SIDES[1]
            rows.append((c, side, s, kernel, t_native, t_grouped, used))
        side = out_side
    print("\n| channels | input side | stride | kernel | PyTorch ms | grouped ms | PyTorch ÷ grouped | used |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for c, sd, s, k, a, b, used in rows:
        print(f"| {c} | {sd} | {s} | {k} | {a:.2f} | {b:.2f} | {a / b:.2f} | {'yes' if used else 'no'} |")


def alternate(first, second, rounds: int, reps: int = 3) -> tuple[float, float]:
    """Median ms of `first` and `second`, timed in alternating rounds (after one untimed call each)."""
    first(), second()
    a, b = [], []
    for _ in range(rounds):
        for fn, out in ((first, a), (second, b)):
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            out.append((time.perf_counter() - t) / reps * 1e3)
    return statistics.median(a), statistics.median(b)


def ofa_step_times(
    cfg, data, space, phase, variants: list[tuple[str, Callable[[], None]]], rounds: int, steps: int
) -> dict[str, float]:
    """Median ms per OFA sandwich step of `phase` under each variant (its callable switches it on), same initial
    weights and batches, in rounds whose order is swapped every round (ABBA: neither always runs first)."""
    trainer = build_plugin(cfg, "trainer")
    options = trainer.options
    phase = replace(phase, epochs=1, sort_channels=False)
    seed_all(0)
    initial = BenchOfaModule(space, [phase], options, data)
    channels_last(initial.supernet)
    batches = [b for _, b in zip(range(steps + 2), data.train_dataloader())]
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    for r in range(rounds):
        for name, switch_on in variants if r % 2 == 0 else variants[::-1]:
            switch_on()
            net = copy.deepcopy(initial.supernet)
            plain_ofa_loop(net, iter(batches[:2]), phase, options, 2)  # warm-up
            t = time.perf_counter()
            plain_ofa_loop(net, iter(batches[2:]), phase, options, steps)
            times[name].append((time.perf_counter() - t) / steps * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def default_setting(resolution: int, threads: int) -> tuple[Any, Any, Any]:
    """The default config, data and bound search space at `resolution`, with `threads` torch threads."""
    torch.set_num_threads(threads)
    overrides = [f"search_space.resolution={resolution}", f"data.resolution={resolution}"]
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    data = build_plugin(cfg, "data")
    data.setup("fit")
    space = build_plugin(cfg, "search_space").bind(data)
    print(f"search_space={space.name} w{space.width_mult} r{space.resolution}; torch threads {threads}")
    return cfg, data, space


def swapped_steps(
    cfg, data, space, phases, module: Any, name: str, replacement: Any, labels: tuple[str, str], rounds: int, steps: int
) -> list[float]:
    """Per phase, the OFA step with `module.name` set to `replacement` (`labels[0]`) against as it is (`labels[1]`),
    side by side (`ofa_step_times`); prints both times per phase and returns their ratios."""
    ours = getattr(module, name)
    variants = [
        (labels[0], lambda: setattr(module, name, replacement)),
        (labels[1], lambda: setattr(module, name, ours)),
    ]
    ratios = []
    for phase in phases:
        try:
            t = ofa_step_times(cfg, data, space, phase, variants, rounds, steps)
        finally:
            setattr(module, name, ours)
        a, b = t[labels[0]], t[labels[1]]
        print(
            f"ofa sandwich step (phase {phase.name}, batch {data.batch_size}, r{space.resolution}): {labels[0]} "
            f"{a:.0f} ms, {labels[1]} {b:.0f} ms (median of {rounds} rounds of {steps} steps, the order swapped every "
            "round)"
        )
        ratios.append(a / b)
    return ratios


def ofa_steps(cfg, data, space, rounds: int, steps: int) -> None:
    phase = parse_phases(build_plugin(cfg, "trainer").raw_phases, space)[-1]
    labels = ("PyTorch's depthwise gradient", "tinyflow's")
    print()
    (ratio,) = swapped_steps(cfg, data, space, [phase], depthwise, "MIN_KERNEL", 10**6, labels, rounds, steps)
    print(f"ofa sandwich step, PyTorch's depthwise gradient ÷ tinyflow's: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolution", type=int, default=48, help="the default job trains at r48")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    cfg, data, space = default_setting(args.resolution, args.threads)
    layer_table(space, data.batch_size, args.rounds)
    ofa_steps(cfg, data, space, args.rounds, args.steps)


if __name__ == "__main__":
    main()
