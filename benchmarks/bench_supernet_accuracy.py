"""Supernet accuracy on the default data and budget: the `train` stage as the default config composes it.

Trains the default `mcunet` supernet with the default `ofa` budget on `mnist5k` (wall time printed), then for the
largest, the smallest and a few random subnets compares the supernet's BN-recalibrated val accuracy
(`Supernet.evaluate`) with the static subnet extracted (`Supernet.extract`, the finetune path) and with one
recalibrated on *other* train batches.

    .venv/bin/python benchmarks/bench_supernet_accuracy.py [hydra overrides...]   # e.g. trainer.epochs=4
"""

from __future__ import annotations

import random
import sys
import tempfile
import time

import torch
from hydra import compose, initialize_config_dir

import tinyflow
from tinyflow.context import RunContext
from tinyflow.nn.calibration import recalibrate_bn
from tinyflow.plugins import build_plugin
from tinyflow.stages.train import run as train_stage
from tinyflow.supernet import Supernet
from tinyflow.training.evaluation import evaluate_accuracy


def other_calibration(data, n_images: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """Un-augmented train images other than the evaluator's (another seeded draw), in batches."""
    ds = data.split("train")
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n_images]
    x, _ = data.transform(train=False)(ds.__getitems__(idx.tolist()))
    return list(x.split(batch_size))


def main(args: list[str]) -> None:
    checkpoint = None
    if args[:1] == ["--checkpoint"]:  # score an already trained supernet (same config), skip training
        checkpoint, args = args[1], args[2:]
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["tracking=none", "trainer.progress=false", *args])
    ctx = RunContext(output_dir=tempfile.mkdtemp(prefix="bench_supernet_"), supernet_checkpoint=checkpoint)
    if checkpoint is None:
        start = time.perf_counter()
        ctx = train_stage(cfg, ctx)
        wall = time.perf_counter() - start
        print(f"train stage wall time: {wall:.1f} s on {torch.get_num_threads()} torch threads")

    data = build_plugin(cfg, "data")
    supernet = Supernet.load(ctx.supernet_checkpoint, data)
    space = supernet.space
    rng = random.Random(123)
    archs = {"largest": space.max_arch(), "smallest": space.min_arch()}
    archs.update({f"random{i}": space.sample(rng) for i in range(3)})
    worst_same = worst_other = 0.0
    print(f"{'subnet':<10} {'supernet':>9} {'extracted':>10} {'gap':>5} {'extracted*':>11} {'gap*':>5}")
    for name, arch in archs.items():
        acc = supernet.evaluate(arch, "val")
        data.set_resolution(arch.resolution)
        # the pipeline's path (finetune): extract, recalibrate on the evaluator's images
        same = evaluate_accuracy(supernet.extract(arch), data.val_dataloader())
        # *: recalibrated on other train images (BN-recalibration sampling noise)
        n_images = supernet.evaluator.recalib_batches * data.batch_size
        calib = other_calibration(data, n_images, data.batch_size, seed=999)
        net = supernet.net.extract(arch)
        recalibrate_bn(net, calib)
        other = evaluate_accuracy(net.eval(), data.val_dataloader())
        gap_same, gap_other = 100 * abs(same - acc), 100 * abs(other - acc)
        worst_same, worst_other = max(worst_same, gap_same), max(worst_other, gap_other)
        row = f"{100 * acc:>8.2f}% {100 * same:>9.2f}% {gap_same:>5.2f} {100 * other:>10.2f}% {gap_other:>5.2f}"
        print(f"{name:<10} {row}")
    print(f"recalibration: {n_images} train images; * = {n_images} other train images")
    print(f"max_extracted_gap_other_calibration: {worst_other:.2f} points")
    print(f"largest_val_accuracy: {100 * supernet.evaluate(archs['largest']):.2f} %")
    print(f"smallest_val_accuracy: {100 * supernet.evaluate(archs['smallest']):.2f} %")
    print(f"max_extracted_gap: {worst_same:.2f} points")


if __name__ == "__main__":
    main(sys.argv[1:])
