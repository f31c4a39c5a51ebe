"""Archs costed per second (MACs + params + flash + layer-plan peak) over random MCUNet-space archs, one core.

Side by side on the same archs: the fast path search uses (`tinyflow.cost.arch_cost`), the IR path
(`from_arch` + MACs + `compute_lifetimes`), and the full layer plan (arena placement + overlap check), with a
check that the fast path and the IR path agree on every arch. Also the arena's overhead above the peak for every
placement algorithm (`memory.arena_algorithm`; the full layer plan uses the default, `best`).

    .venv/bin/python benchmarks/bench_cost.py [--archs 3000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from tinyflow.arch import MBConvSpace
from tinyflow.contracts import MemoryConfig
from tinyflow.cost import arch_cost
from tinyflow.ir import from_arch
from tinyflow.memory import ALGORITHMS, compute_lifetimes, layer_plan

WIDTHS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # MCUNet §3.1's scan
RESOLUTIONS = list(range(48, 225, 16))


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def rate(fn, items, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    """Best-of-`repeat` items per second."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for it in items:
            fn(it)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    where = pin_one_core()
    rng = random.Random(args.seed)
    spaces = {(w, r): MBConvSpace(width_mult=w, resolution=r) for w in WIDTHS for r in RESOLUTIONS}
    keys = list(spaces)
    start = time.perf_counter()
    archs = [spaces[rng.choice(keys)].sample(rng) for _ in range(args.archs)]
    sample_rate = len(archs) / (time.perf_counter() - start)
    memory = MemoryConfig()

    mismatches = 0
    for a in archs:
        g = from_arch(a)
        lt = compute_lifetimes(g, memory)
        f = arch_cost(a, memory)
        mismatches += (f.macs, f.peak_live_bytes, f.peak_layer) != (g.macs(), lt.peak_live_bytes, lt.peak_layer)

    def ir_path(a):  # type: ignore[no-untyped-def]
        g = from_arch(a)
        return g.macs(), compute_lifetimes(g, memory).peak_live_bytes

    subset = archs[: max(1, len(archs) // 10)]
    fast = rate(lambda a: arch_cost(a, memory), archs)
    cpu0 = time.process_time()
    for a in archs:
        arch_cost(a, memory)
    fast_cpu = len(archs) / (time.process_time() - cpu0)  # per CPU-second: robust to a shared machine
    ir = rate(ir_path, subset)
    full = rate(lambda a: layer_plan(from_arch(a), memory), subset, repeat=1)

    frag = {}
    for algo in ALGORITHMS:
        m = MemoryConfig(arena_algorithm=algo)
        vals = []
        for a in subset:
            p = layer_plan(from_arch(a), m)
            vals.append(p.arena_bytes / p.peak_live_bytes - 1)
        frag[algo] = (statistics.mean(vals), max(vals))

    print(f"{len(archs)} random MCUNet-space archs over {len(WIDTHS)}x{len(RESOLUTIONS)} (w, r) cells; {where}")
    print(f"  sampling archs              {sample_rate:10,.0f} archs/s")
    print(f"  fast path (arch_cost)       {fast:10,.0f} archs/s   ({fast_cpu:,.0f} per CPU-second)")
    print(f"  IR path (from_arch+MACs+peak){ir:9,.0f} archs/s   fast / IR = {fast / ir:.1f}x")
    print(f"  full layer plan (+arena)    {full:10,.0f} archs/s   fast / full = {fast / full:.1f}x")
    print(
        f"  fast path == IR path on all {len(archs)} archs: {'yes' if mismatches == 0 else f'NO ({mismatches} differ)'}"
    )
    for algo, (mean, worst) in frag.items():
        print(f"  arena over peak, {algo:<22} mean {100 * mean:.2f} %  max {100 * worst:.2f} %  ({len(subset)} archs)")
    n_eval = 108_000
    print(f"  {n_eval:,} evaluations (space optimisation) take {n_eval / fast:.1f} s with the fast path")
    print(f"archs_costed_per_second: {fast:.0f} archs/s")


if __name__ == "__main__":
    main()
