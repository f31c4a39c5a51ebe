"""How many validation images the search needs to rank subnets: the predictor's Spearman ρ against val-set size.

TinyNAS's second stage trains an accuracy predictor on subnets measured on the supernet (BatchNorm recalibrated, then
scored on the val split) and ranks candidates with it. When each measurement's standard error is as large as the
spread between subnets, the predictor learns noise. This benchmark measures, on one trained supernet:

1. `--subnets` distinct subnets that fit the configured device (drawn as the search draws its predictor pairs), each
   scored per image on the whole val split (`data.eval_copies` canvases per held-apart digit): one pass gives the
   accuracy on every prefix of the split, so every val size is measured on the same subnets;
2. the measurement's own reliability at each size n: Spearman between the subnets' accuracies on two disjoint sets
   of n images (the ceiling any predictor trained on such labels can show);
3. the predictor at each size: trained on the first `--train-pairs` subnets' accuracies on the first n val images
   (as the search trains it, `strategy.predictor`), ranked on the remaining held-apart subnets against (a) their
   accuracy on the same n images — the `predictor_spearman` the search logs — and (b) their accuracy on the
   split's second half, images no size up to half the split has seen (an independent reference);
4. the cost of one subnet measurement (BatchNorm recalibration + n images) and what the search's predictor pairs
   would cost at each size.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_val_size.py --checkpoint <run>/train/supernet.ckpt
        [--subnets 300] [--train-pairs 240] [--sizes 250,500,1000,2000] [--out DIR] [override ...]

Overrides are Hydra overrides of the pipeline's config (the device, `data.eval_copies`, ...). The per-image results
are kept in `<out>/correct.npz`: a rerun with the same checkpoint and subnets reads them back.
Last line: `val images for predictor Spearman >= 0.8: <n>` (or `none of <sizes>`).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from scipy.stats import spearmanr

import tinyflow
from tinyflow.device import build_device
from tinyflow.plugins import build_plugin
from tinyflow.search.predictor import AccuracyPredictor, PredictorConfig
from tinyflow.search.problem import Budgets, SearchProblem
from tinyflow.stages.search import make_costs
from tinyflow.supernet import Supernet


def measure(supernet: Supernet, problem: SearchProblem, n: int, seed: int, cache: Path):
    """`n` distinct fitting subnets and their per-image correctness on the val split (read back when cached)."""
    rng = random.Random(seed)
    archs: dict[str, object] = {}
    while len(archs) < n:
        arch = problem.draw(lambda: problem.sample(rng)).arch
        archs.setdefault(arch.key(), arch)
    keys = list(archs)
    if cache.exists():
        saved = np.load(cache, allow_pickle=False)
        if list(saved["keys"]) == keys:
            return list(archs.values()), saved["correct"], saved["recalib_s"], saved["eval_s"]
    rows, recal_s, eval_s = [], [], []
    ev = supernet.evaluator
    start = time.perf_counter()
    for i, arch in enumerate(archs.values()):
        ev.eval_batches("val", arch.resolution)  # the resized split, once per resolution (not timed per subnet)
        t0 = time.perf_counter()
        ev.correct(arch, "val", max_images=1)  # recalibration + one image
        t1 = time.perf_counter()
        rows.append(ev.correct(arch, "val").numpy())
        t2 = time.perf_counter()
        recal_s.append(t1 - t0)
        eval_s.append((t2 - t1) - (t1 - t0))  # the full pass less its own recalibration
        if (i + 1) % 25 == 0:
            print(f"  measured {i + 1}/{n} subnets ({time.perf_counter() - start:.0f} s)", flush=True)
    correct = np.stack(rows)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, keys=np.array(keys), correct=correct, recalib_s=np.array(recal_s), eval_s=np.array(eval_s))
    return list(archs.values()), correct, np.array(recal_s), np.array(eval_s)


def rho(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b).statistic)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a trained supernet (a run's train/ checkpoint)")
    p.add_argument("--subnets", type=int, default=300)
    p.add_argument("--train-pairs", type=int, default=240)
    p.add_argument("--sizes", default="250,500,1000,2000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/bench_val_size")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    torch.set_num_threads(1)
    conf = str(Path(tinyflow.__file__).resolve().parents[2] / "conf")
    with initialize_config_dir(config_dir=conf, version_base=None):
        cfg = compose(config_name="config", overrides=["tracking=none", *args.overrides])
    supernet = Supernet.load(args.checkpoint, build_plugin(cfg, "data"))
    settings = build_plugin(cfg, "strategy").settings
    device = build_device(cfg)
    costs, _ = make_costs(cfg, settings, device, supernet.network, supernet.space.max_arch())
    budgets = Budgets(sram_bytes=device.sram_budget_bytes, flash_bytes=device.flash_budget_bytes)
    problem = SearchProblem(supernet.space, lambda a: 0.0, costs, budgets)
    out = Path(args.out)
    archs, correct, recal_s, eval_s = measure(supernet, problem, args.subnets, args.seed, out / "correct.npz")
    n_split = correct.shape[1]
    half = n_split // 2
    sizes = [int(s) for s in args.sizes.split(",") if int(s) <= n_split]
    reference = correct[:, half:].mean(axis=1)  # images no size <= half has seen
    train, held = slice(0, args.train_pairs), slice(args.train_pairs, len(archs))
    per_image = float(np.median(eval_s)) / n_split
    recal = float(np.median(recal_s))
    acc_full = correct.mean(axis=1)
    print(
        f"\n{len(archs)} subnets fitting {cfg.device.name}, val split {n_split} canvases; "
        f"accuracy over subnets {100 * acc_full.min():.1f}–{100 * acc_full.max():.1f} % "
        f"(sd {100 * acc_full.std():.2f} points); one measurement: recalibration {recal:.3f} s + "
        f"{1000 * per_image:.3f} ms per image (medians, 1 thread)"
    )
    print(
        "\n| val images | SE at 90 % | reliability ρ (two disjoint sets) | predictor ρ, same images | "
        "predictor ρ, independent reference | predictor pairs' cost |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    first = None
    for n in sizes:
        acc_n = correct[:, :n].mean(axis=1)
        other = correct[:, n : 2 * n].mean(axis=1) if 2 * n <= n_split else None
        pc = PredictorConfig(**{**dict(cfg.strategy.predictor), "seed": args.seed, "n_samples": args.train_pairs})
        predictor = AccuracyPredictor(problem.space.encode, pc)
        predictor.fit(archs[train], acc_n[train].tolist())
        pred = predictor.predict_many(archs[held])
        rho_same = rho(pred, acc_n[held])
        rho_ref = rho(pred, reference[held]) if n <= half else float("nan")
        rel = rho(acc_n, other) if other is not None else float("nan")
        cost = len(archs) * (recal + n * per_image)
        se = 100 * (0.9 * 0.1 / n) ** 0.5
        print(
            f"| {n} | ±{se:.2f} | {rel:.3f} | {rho_same:.3f} | {rho_ref:.3f} | {cost:.0f} s for {len(archs)} subnets |"
        )
        if first is None and rho_same >= 0.8:
            first = n
    print(f"val images for predictor Spearman >= 0.8: {first if first is not None else 'none of ' + args.sizes}")


if __name__ == "__main__":
    main()
