"""Arena placement: overhead above the peak (arena / peak - 1) and placement time, every algorithm side by side.

Cases: the MobileNetV2 w1.0 r224 patch plan (4x4, patch_blocks 5) with a streamed input; layer plans of the
MobileNetV2 / MbV2-RD family; patch plans (4x4, patch_blocks 5) of the same family; layer and patch plans of
random MCUNet-space archs; each with `memory.count_input` true and false. Every plan passes the overlap checker.

    .venv/bin/python benchmarks/bench_arena.py [--archs 150] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from tinyflow.arch import MBConvSpace, mobilenetv2
from tinyflow.arch.zoo import mbv2_rd
from tinyflow.contracts import MemoryConfig
from tinyflow.errors import ConfigError
from tinyflow.ir import Graph, from_arch
from tinyflow.memory import ALGORITHMS, check_no_overlap, layer_plan
from tinyflow.memory.patch_plan import patch_plan
from tinyflow.memory.plan import ExecutionPlan

Planner = Callable[[Graph, MemoryConfig], ExecutionPlan]


def layer(g: Graph, m: MemoryConfig) -> ExecutionPlan:
    return layer_plan(g, m)


def patch(g: Graph, m: MemoryConfig) -> ExecutionPlan:
    return patch_plan(g, m, patch_blocks=5, n_patches=4)


def measure(cases: Iterable[tuple[Graph, Planner]], algo: str) -> tuple[list[float], float]:
    """Overheads of every case under `algo` (both count_input settings) and the mean wall time of one plan."""
    over, times = [], []
    for g, planner in cases:
        for count_input in (True, False):
            m = MemoryConfig(count_input=count_input, arena_algorithm=algo)
            start = time.perf_counter()
            plan = planner(g, m)
            times.append(time.perf_counter() - start)
            check_no_overlap(plan.tensors)
            over.append(plan.arena_bytes / plan.peak_live_bytes - 1)
    return over, statistics.mean(times)


def patchable(g: Graph) -> bool:
    try:
        patch_plan(g, MemoryConfig(), 5, 4, check=False, placement=False)
    except ConfigError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    mbv2 = from_arch(mobilenetv2(1.0, 224))
    print("MobileNetV2 w1.0 r224, patch 4x4, patch_blocks 5, count_input false:")
    for algo in ALGORITHMS:
        p = patch_plan(mbv2, replace(MemoryConfig(), count_input=False, arena_algorithm=algo), 5, 4)
        check_no_overlap(p.tensors)
        print(
            f"  {algo:<22} peak {p.peak_live_bytes:>8,} B  arena {p.arena_bytes:>8,} B  +{100 * p.fragmentation:5.2f} %"
        )

    family = [
        from_arch(f(w, r))
        for f in (mobilenetv2, mbv2_rd)
        for w in (0.35, 0.5, 0.75, 1.0, 1.4)
        for r in (96, 128, 160, 224)
    ]
    rng = random.Random(args.seed)
    space = [(w, r) for w in (0.3, 0.4, 0.5, 0.6, 0.75, 1.0) for r in range(96, 225, 32)]
    randoms = []
    for _ in range(args.archs):
        w, r = rng.choice(space)
        randoms.append(from_arch(MBConvSpace(width_mult=w, resolution=r).sample(rng)))
    groups = {
        f"MbV2 + MbV2-RD family, layer ({2 * len(family)} plans)": [(g, layer) for g in family],
        f"MbV2 + MbV2-RD family, patch 4x4 pb5 ({2 * len(family)} plans)": [(g, patch) for g in family],
        f"random MCUNet-space, layer ({2 * len(randoms)} plans)": [(g, layer) for g in randoms],
        "random MCUNet-space, patch 4x4 pb5": [(g, patch) for g in randoms if patchable(g)],
    }
    worst = 0.0
    for title, cases in groups.items():
        print(title + ":")
        for algo in ALGORITHMS:
            over, t = measure(cases, algo)
            print(
                f"  {algo:<22} mean +{100 * statistics.mean(over):5.2f} %  max +{100 * max(over):5.2f} %  "
                f"at peak {sum(o == 0 for o in over):>3}/{len(over)}  {1000 * t:6.1f} ms/plan"
            )
            if algo == "best":
                worst = max(worst, max(over))
    print(f"arena_over_peak_worst_best: {100 * worst:.2f} %")


if __name__ == "__main__":
    main()
