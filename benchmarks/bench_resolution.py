"""Accuracy against input resolution: one fixed network trained with the same budget at each resolution of the grid.

The network is one genome of the default search space (conf/search_space/mcunet.yaml bound to the data) at one
width; only the input resolution changes between rows (the same genome, the same seed, the same epochs, batch
size and SGD + cosine recipe). On the default task (cluttered MNIST, small digits on a large canvas) a low
resolution shrinks a digit to a few pixels, so test accuracy should rise with resolution: that is why the device's
SRAM, which caps the resolution, changes the answer. The last line is `resolution_accuracy_gain: <points> pct`, the
test accuracy at the highest resolution minus the lowest.

    .venv/bin/python benchmarks/bench_resolution.py [--epochs 8] [--width 0.35] [--resolutions 32,48,64]
        [--genome mid|min|max] [override ...]     # Hydra overrides, e.g. data=cluttered_mnist data.canvas=64
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import tinyflow
from tinyflow.nn.static import StaticNet
from tinyflow.plugins import build_plugin
from tinyflow.training.evaluation import evaluate_accuracy
from tinyflow.training.lightning import seed_all
from tinyflow.training.optim import build_optimizer, cosine_schedule


def genome(space: object, which: str) -> dict[str, list[int]]:
    """The fixed genome: the space's smallest, largest, or middle choice in every slot."""
    pick = {"min": min, "max": max, "mid": lambda c: sorted(c)[len(c) // 2]}[which]
    n = space.n_slots  # type: ignore[attr-defined]
    return {
        "depths": [pick(space.depth_choices)] * len(space.stages),  # type: ignore[attr-defined]
        "kernels": [pick(space.kernel_choices)] * n,  # type: ignore[attr-defined]
        "expands": [pick(space.expand_choices)] * n,  # type: ignore[attr-defined]
    }


def train_and_test(model: torch.nn.Module, data: object, epochs: int, lr: float, seed: int) -> tuple[float, float]:
    """SGD (Nesterov) + per-step cosine, label smoothing 0.1; returns (test accuracy, seconds)."""
    start = time.perf_counter()
    loader = data.train_dataloader()  # type: ignore[attr-defined]
    optimizer = build_optimizer(model, "sgd", lr, 5e-5, 0.9)
    schedule = cosine_schedule(optimizer, epochs * len(loader), warmup_steps=len(loader) // 2)
    torch.manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            schedule.step()
    acc = evaluate_accuracy(model, data.test_dataloader())  # type: ignore[attr-defined]
    return acc, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--width", type=float, default=None, help="width multiplier; default: the grid's smallest")
    ap.add_argument("--resolutions", default=None, help="comma-separated; default: the config's space.resolutions")
    ap.add_argument("--genome", choices=("min", "mid", "max"), default="mid")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the pipeline config")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["tracking=none", *args.overrides])
    resolutions = (
        [int(r) for r in args.resolutions.split(",")] if args.resolutions else [int(r) for r in cfg.space.resolutions]
    )
    width = args.width if args.width is not None else float(min(cfg.space.widths))
    data = build_plugin(cfg, "data")
    data.setup()
    space = build_plugin(cfg, "search_space")
    space = space.bind(data) if hasattr(space, "bind") else space
    g = genome(space, args.genome)
    print(
        f"data={cfg.data._target_.rsplit('.', 1)[-1]} native {data.resolution}px, train {len(data.split('train'))} "
        f"/ test {len(data.split('test'))} images; genome {args.genome} at w={width:g}; {args.epochs} epochs each"
    )
    rows = []
    for r in sorted(resolutions):
        arch = space.with_width_resolution(width, r).build(g["depths"], g["kernels"], g["expands"])
        data.set_resolution(r)
        seed_all(args.seed)
        model = StaticNet(arch)
        acc, seconds = train_and_test(model, data, args.epochs, args.lr, args.seed)
        macs = model_macs(arch)
        rows.append((r, acc, macs, seconds))
        print(f"  r={r:4d}  test accuracy {100 * acc:5.1f} %   {macs / 1e6:5.2f} M MACs   {seconds:5.0f} s", flush=True)
    print("\n| resolution | test accuracy (%) | MACs (M) | train + test (s) |\n| --- | --- | --- | --- |")
    for r, acc, macs, seconds in rows:
        print(f"| {r} | {100 * acc:.1f} | {macs / 1e6:.2f} | {seconds:.0f} |")
    gain = 100 * (rows[-1][1] - rows[0][1])
    print(f"resolution_accuracy_gain: {gain:.1f} pct")


def model_macs(arch: object) -> int:
    from tinyflow.ir import from_arch

    return int(from_arch(arch).macs())


if __name__ == "__main__":
    main()
