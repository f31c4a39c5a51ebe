"""Accuracy evaluation of a static network: the trained layout against `inference_forward`, side by side.

The network is the default search space's largest subnet (conf/search_space/mcunet.yaml bound to the default data)
at `--resolution` (48: what the default job's space stage chooses), BatchNorm statistics made non-trivial by a few
train-mode batches; the images are the default data's test split (5,000 canvases). Rounds alternate the two ways
so background load hits both alike; the line printed last is the median over rounds of old / new time, and the
two must count the same images right.

    .venv/bin/python benchmarks/bench_eval.py [--rounds 3] [--threads 1] [--resolution 48]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
from hydra import compose, initialize_config_dir

import tinyflow
from tinyflow.nn.static import StaticNet
from tinyflow.plugins import build_plugin
from tinyflow.training.evaluation import count_correct, inference_forward, nhwc


def trained_layout(model: torch.nn.Module, batches: list) -> tuple[int, float]:
    """Correct count and seconds: the model as it comes out of training (NCHW, Conv -> BatchNorm -> ReLU6)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        correct = sum(count_correct(model(x), y) for x, y in batches)
    return correct, time.perf_counter() - t0


def inference_layout(model: torch.nn.Module, batches: list) -> tuple[int, float]:
    """Correct count and seconds through `evaluate_accuracy`'s path (its copy of the model included)."""
    t0 = time.perf_counter()
    forward = inference_forward(model)
    with torch.no_grad():
        correct = sum(count_correct(forward(nhwc(x)), y) for x, y in batches)
    return correct, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads; 0 = torch's default")
    parser.add_argument("--resolution", type=int, default=48)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config")
    data = build_plugin(cfg, "data")
    data.setup("fit")
    space = build_plugin(cfg, "search_space").bind(data)
    arch = space.max_arch()
    arch = replace(arch, resolution=args.resolution, genome={**arch.genome, "resolution": args.resolution})
    data.set_resolution(args.resolution)
    torch.manual_seed(0)
    model = StaticNet(arch)
    with torch.no_grad():  # running statistics that are not the identity, so folding has work to do
        for x, _ in list(data.train_dataloader())[:4]:
            model(x)
    model.eval()
    batches = list(data.test_dataloader())
    n = sum(len(y) for _, y in batches)
    threads = torch.get_num_threads()
    print(f"{space.name} w{space.width_mult} r{args.resolution}: {n:,} test images, {threads} thread(s)")
    ratios = []
    for r in range(args.rounds):
        old_correct, old_s = trained_layout(model, batches)
        new_correct, new_s = inference_layout(model, batches)
        if old_correct != new_correct:
            print(f"round {r}: the two count {old_correct} and {new_correct} images right (float rounding)")
        ratios.append(old_s / new_s)
        print(f"round {r}: trained layout {old_s:.2f} s, inference_forward {new_s:.2f} s, ratio {old_s / new_s:.2f}")
    print(f"evaluation, trained layout / inference_forward (median of {args.rounds}): {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
