"""Benchmark: TinyNAS space optimisation, 9 widths × 12 resolutions × 1000 samples (108,000 evaluations) with the
layer scheduler's costs from the memory engine's fast path, on one thread. Target: under 60 s.

Also measured in the same run, on a 2,000-arch slice, the same evaluation through the full IR + layer plan, to
show why search uses the fast path (it is tested to give identical numbers).

    .venv/bin/python benchmarks/bench_space.py [--samples 1000]
"""

from __future__ import annotations

import argparse
import random
import time

from tinyflow.arch.space import MBConvSpace
from tinyflow.contracts import Device, MemoryConfig
from tinyflow.cost import model_flash_bytes
from tinyflow.ir import from_arch
from tinyflow.memory import peak_live_bytes
from tinyflow.search.costing import SchedulerCosts
from tinyflow.search.problem import Costs
from tinyflow.search.space_opt import optimize_space
from tinyflow_plugins.schedulers.layer import LayerScheduler

WIDTHS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
RESOLUTIONS = list(range(48, 225, 16))  # 48 … 224, MCUNet's grid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1000)
    args = ap.parse_args()
    device = Device("stm32f746", sram_kb=320, flash_kb=1024, core="cortex_m7", clock_mhz=216)
    memory = MemoryConfig()
    space = MBConvSpace(num_classes=10)  # 10 classes (CIFAR-10 / MNIST): the 1000-class head alone exceeds 1 MB
    res = optimize_space(
        space,
        WIDTHS,
        RESOLUTIONS,
        SchedulerCosts(memory, lambda o: LayerScheduler()),
        device.sram_budget_bytes,
        device.flash_budget_bytes,
        samples_per_cell=args.samples,
        seed=0,
        progress=False,
    )
    rate = res.n_evaluations / res.seconds
    print(f"device {device.name}: SRAM {device.sram_kb:g} kB, flash {device.flash_kb:g} kB, layer scheduler, int8")
    print(
        f"cells {len(res.cells)} × samples {args.samples} = {res.n_evaluations} evaluations in {res.seconds:.1f} s "
        f"({rate:,.0f} archs/s)"
    )
    print(
        f"chosen w={res.best.width_mult:g} r={res.best.resolution}: mean MACs of fitting subnets "
        f"{res.best.mean_macs / 1e6:.1f} M, {res.best.fit_share:.0%} of samples fit"
    )

    rng = random.Random(1)
    sl = [space.with_width_resolution(rng.choice(WIDTHS), rng.choice(RESOLUTIONS)).sample(rng) for _ in range(2000)]
    t = time.perf_counter()
    for a in sl:
        g = from_arch(a)
        Costs(peak_live_bytes(g, memory), model_flash_bytes(g), g.macs())
    ir_rate = len(sl) / (time.perf_counter() - t)
    fast = SchedulerCosts(memory, lambda o: LayerScheduler())
    t = time.perf_counter()
    for a in sl:
        fast(a)
    fast_rate = len(sl) / (time.perf_counter() - t)
    print(
        f"same 2,000 archs: IR + layer lifetimes {ir_rate:,.0f} archs/s, fast path {fast_rate:,.0f} archs/s "
        f"(×{fast_rate / ir_rate:.1f})"
    )
    print(f"space_optimisation_108k_seconds: {res.seconds * 108000 / res.n_evaluations:.1f} s")


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    main()
