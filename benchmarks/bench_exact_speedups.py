"""Three speed-ups that change no number beyond rounding, each against the code path it replaces, side by side.

1. **Kernels cropped to their map** (`tinyflow.nn.depthwise.visible_kernel`): the OFA sandwich step of the default
   trainer's phases (full, kernel, expand) at the default job's resolution (r48: the last stages run 3 px maps,
   where a 7x7 kernel is its centre 5x5), with the crop and without it (`visible_kernel` replaced by one that keeps
   the whole kernel), same weights and batches, the order swapped every round. Last lines:
   `ofa sandwich step (<phase>), whole kernels ÷ cropped: <x>`.
2. **The shared layers run once** (`SubnetEvaluator(cache_prefix=True)`, what a loaded `Supernet` uses): the
   search's measurement of a subnet (BatchNorm recalibration on 256 train images, then `--images` val images, one
   thread, as a search worker runs it) with every layer per subnet and with the stem / first block and the first
   elastic blocks a subnet shares with the one before cached, `--subnets` random subnets in the search's sharing
   order (a search worker measures 100 of the 200 pairs), alternating rounds; the accuracies must agree. Last line:
   `subnet measurement, every layer ÷ shared layers cached: <x>`.
3. **ReLU6 in place without autograd's clone** (`tinyflow.nn.activation.relu6_`): the OFA sandwich step of the
   kernel and expand phases with it and with PyTorch's `F.relu6(inplace=True)` in the elastic blocks, the same
   gradients to the bit. Last lines: `ofa sandwich step (<phase>), PyTorch's relu6_ ÷ tinyflow's: <x>`.

    .venv/bin/python benchmarks/bench_exact_speedups.py [--resolution 48] [--threads 2] [--rounds 4] [--steps 6]
        [--subnets 100] [--images 2000] [--only crop,measurement,relu6]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tinyflow.nn import depthwise, elastic
from tinyflow.nn.elastic import ElasticSupernet
from tinyflow.plugins import build_plugin
from tinyflow.supernet.evaluation import SubnetEvaluator, sharing_order
from tinyflow_plugins.trainers.ofa_phases import parse_phases

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_depthwise import default_setting, swapped_steps


def whole_kernel(weight: torch.Tensor, side: tuple[int, int], stride: int) -> tuple[torch.Tensor, list[int]]:
    """`visible_kernel` without the crop: the code path before it."""
    return weight, [weight.shape[-2] // 2, weight.shape[-1] // 2]


def crop_steps(cfg, data, space, rounds: int, steps: int) -> None:
    phases = parse_phases(build_plugin(cfg, "trainer").raw_phases, space)
    phases = [phases[0], phases[1], phases[-1]]
    labels = ("whole kernels", "cropped")
    ratios = swapped_steps(cfg, data, space, phases, depthwise, "visible_kernel", whole_kernel, labels, rounds, steps)
    for phase, ratio in zip(phases, ratios):
        print(f"ofa sandwich step ({phase.name}), whole kernels ÷ cropped: {ratio:.2f}")


def relu6_steps(cfg, data, space, rounds: int, steps: int) -> None:
    phases = parse_phases(build_plugin(cfg, "trainer").raw_phases, space)
    phases = [phases[1], phases[-1]]
    pytorch = lambda x: F.relu6(x, inplace=True)  # noqa: E731
    labels = ("PyTorch's relu6_", "tinyflow's")
    ratios = swapped_steps(cfg, data, space, phases, elastic, "relu6_", pytorch, labels, rounds, steps)
    for phase, ratio in zip(phases, ratios):
        print(f"ofa sandwich step ({phase.name}), PyTorch's relu6_ ÷ tinyflow's: {ratio:.2f}")


def measurement(data, space, rounds: int, n_subnets: int, images: int) -> None:
    torch.manual_seed(0)
    net = ElasticSupernet(space).to(memory_format=torch.channels_last)
    rng = random.Random(0)
    archs = sharing_order(net, [space.sample(rng) for _ in range(n_subnets)])  # the order the search measures in
    evaluators = {"every layer": SubnetEvaluator(net, data, 4, 0), "cached": SubnetEvaluator(net, data, 4, 0, True)}
    times: dict[str, list[float]] = {k: [] for k in evaluators}
    accs: dict[str, list[float]] = {}
    order = list(evaluators.items())
    before = torch.get_num_threads()
    # one thread throughout, as a search worker measures: cached outputs computed on two threads would round
    # their BatchNorm statistics' sums differently from the one-thread pass they are compared with
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for ev in evaluators.values():
                ev.prepare("val", space.resolution)
                ev.accuracy(archs[-1], "val", images)  # warm-up
            for r in range(rounds):
                for name, ev in order if r % 2 == 0 else order[::-1]:
                    t = time.perf_counter()
                    accs[name] = [ev.accuracy(a, "val", images) for a in archs]
                    times[name].append((time.perf_counter() - t) / len(archs))
    finally:
        torch.set_num_threads(before)
    if accs["every layer"] != accs["cached"]:
        raise SystemExit(f"the two paths disagree: {accs}")
    a, b = statistics.median(times["every layer"]), statistics.median(times["cached"])
    print(
        f"subnet measurement ({n_subnets} subnets, 256 calibration + {images} val images, one thread): every layer "
        f"{a:.3f} s, shared layers cached {b:.3f} s per subnet (median of {rounds} rounds); the same accuracies"
    )
    print(f"subnet measurement, every layer ÷ shared layers cached: {a / b:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolution", type=int, default=48, help="the default job trains at r48")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--subnets", type=int, default=100, help="the subnets one of two search workers measures")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--only", default="crop,measurement,relu6", help="which of the three, comma-separated")
    args = parser.parse_args()
    only = set(args.only.split(","))
    cfg, data, space = default_setting(args.resolution, args.threads)
    if "crop" in only:
        crop_steps(cfg, data, space, args.rounds, args.steps)
    if "measurement" in only:
        measurement(data, space, args.rounds, args.subnets, args.images)
    if "relu6" in only:
        relu6_steps(cfg, data, space, args.rounds, args.steps)


if __name__ == "__main__":
    main()
