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
   (as the search trains it, `strategy.predictor`), ranked on the last `--held-apart` subnets against (a) their
   accuracy on the same n images — the `predictor_spearman` the search logs — and (b) their accuracy on the
   split's second half, images no size up to half the split has seen (an independent reference);
4. the cost of one subnet measurement (BatchNorm recalibration + n images) and what the search's predictor pairs
   would cost at each size.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_val_size.py --checkpoint <run>/train/supernet.ckpt
        [--subnets 300] [--held-apart 60] [--train-pairs 120,240] [--sizes 250,500,1000,2000] [--out DIR] [override ...]

Overrides are Hydra overrides of the pipeline's config (the device, `data.eval_copies`, ...). The per-image results
are kept in `<out>/correct.npz`: a rerun with the same checkpoint and subnets reads them back. The curve — the
reliability and the predictor's ρ (both references, one line per pair count) against val images — is
`<out>/rho_vs_val_size.png`; with `--tracking mlflow` it and the table go to one MLflow run (kind=bench_val_size).
Last line: `val images for predictor Spearman >= 0.8: on the same images <n>; on an independent reference <n>` (or
`none of <sizes>`).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from scipy.stats import spearmanr

import tinyflow
from tinyflow.arch.genome import Arch
from tinyflow.plugins import build_device, build_plugin
from tinyflow.search.predictor import AccuracyPredictor, PredictorConfig
from tinyflow.search.problem import Budgets, SearchProblem
from tinyflow.stages.search import make_costs
from tinyflow.supernet import Supernet


def draw_archs(problem: SearchProblem, n: int, seed: int) -> list[Arch]:
    """`n` distinct subnets that fit, drawn as the search draws its predictor pairs."""
    rng = random.Random(seed)
    archs: dict[str, Arch] = {}
    while len(archs) < n:
        arch = problem.draw(lambda: problem.sample(rng)).arch
        archs.setdefault(arch.key(), arch)
    return list(archs.values())


def per_image_hits(supernet: Supernet, archs: list[Arch], cache: Path) -> np.ndarray:
    """subnets × val images: whether each subnet classifies each image right (read back when cached)."""
    keys = [a.key() for a in archs]
    if cache.exists():
        saved = np.load(cache, allow_pickle=False)
        if list(saved["keys"]) == keys:
            return saved["correct"]
    rows = []
    start = time.perf_counter()
    for i, arch in enumerate(archs):
        rows.append(supernet.evaluator.correct(arch, "val").numpy())
        if (i + 1) % 25 == 0:
            print(f"  measured {i + 1}/{len(archs)} subnets ({time.perf_counter() - start:.0f} s)", flush=True)
    correct = np.stack(rows)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, keys=np.array(keys), correct=correct)
    return correct


def measurement_cost(supernet: Supernet, archs: list[Arch], n_images: int) -> tuple[float, float]:
    """Median seconds of BatchNorm recalibration and of one val image, timed afresh on `archs` (the code as it is
    now, one thread)."""
    ev = supernet.evaluator
    recal, per_image = [], []
    for arch in archs:
        ev.eval_batches("val", arch.resolution)  # the resized split: built once per resolution, not per subnet
        t0 = time.perf_counter()
        ev.correct(arch, "val", max_images=1)
        t1 = time.perf_counter()
        ev.correct(arch, "val", max_images=n_images)
        t2 = time.perf_counter()
        recal.append(t1 - t0)
        per_image.append(((t2 - t1) - (t1 - t0)) / n_images)
    return float(np.median(recal)), float(np.median(per_image))


def rho(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b).statistic)


def curve_figure(rows: list[dict[str, float]], title: str) -> plt.Figure:
    """Reliability and predictor ρ against val images (log axis), one line per pair count and reference."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = sorted({int(r["images"]) for r in rows})
    rel = [next(r["reliability"] for r in rows if r["images"] == n) for n in sizes]
    ax.plot(sizes, rel, "k--o", label="reliability (two disjoint image sets)")
    for n_pairs in sorted({int(r["pairs"]) for r in rows}):
        mine = [r for r in rows if r["pairs"] == n_pairs]
        xs = [r["images"] for r in mine]
        ax.plot(xs, [r["rho_same"] for r in mine], "-o", label=f"predictor, same images ({n_pairs} pairs)")
        ax.plot(xs, [r["rho_reference"] for r in mine], ":s", label=f"predictor, independent images ({n_pairs} pairs)")
    ax.axhline(0.8, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_ylim(top=max(0.85, ax.get_ylim()[1]))
    ax.set_xlabel("val images per subnet")
    ax.set_ylabel("Spearman ρ")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def log_mlflow(cfg, text: str, fig: plt.Figure, rows: list[dict[str, float]]) -> None:
    """The table, its rows and the curve in one MLflow run (kind=bench_val_size)."""
    import json

    from tinyflow.tracking import activate

    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base=None):
        cfg.tracking = compose(config_name="config", overrides=["tracking=mlflow"]).tracking
    tracker = build_plugin(cfg, "tracking")
    tags = {"run_name": "bench_val_size", "kind": "bench_val_size"}
    with activate(tracker), tracker.job(cfg, tags), tracker.stage("bench_val_size"):
        tracker.log_text(text, "bench_val_size.md")
        tracker.log_text(json.dumps(rows, indent=2), "bench_val_size.json")
        tracker.log_figure(fig, "rho_vs_val_size.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a trained supernet (a run's train/ checkpoint)")
    p.add_argument("--subnets", type=int, default=300)
    p.add_argument("--train-pairs", default="120,240", help="predictor training pairs, a list")
    p.add_argument("--held-apart", type=int, default=60, help="the last this many subnets rank the predictors")
    p.add_argument("--time-subnets", type=int, default=10, help="subnets timed afresh for the cost column")
    p.add_argument("--sizes", default="250,500,1000,2000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/bench_val_size")
    p.add_argument("--tracking", default="none", choices=("none", "mlflow"))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=["tracking=none", *args.overrides])
    supernet = Supernet.load(args.checkpoint, build_plugin(cfg, "data"))
    settings = build_plugin(cfg, "strategy").settings
    device = build_device(cfg)
    costs, _ = make_costs(cfg, settings, device, supernet.network, supernet.space.max_arch())
    budgets = Budgets(sram_bytes=device.sram_budget_bytes, flash_bytes=device.flash_budget_bytes)
    problem = SearchProblem(supernet.space, lambda a: 0.0, costs, budgets)
    archs = draw_archs(problem, args.subnets, args.seed)
    correct = per_image_hits(supernet, archs, Path(args.out) / "correct.npz")
    n_split = correct.shape[1]
    recal, per_image = measurement_cost(supernet, archs[: args.time_subnets], min(1000, n_split))
    half = n_split // 2
    sizes = [int(s) for s in args.sizes.split(",") if int(s) <= n_split]
    pairs = [int(s) for s in args.train_pairs.split(",")]
    reference = correct[:, half:].mean(axis=1)  # images no size <= half has seen
    if max(pairs) > len(archs) - args.held_apart:
        raise SystemExit(f"--train-pairs up to {max(pairs)} leave fewer than --held-apart {args.held_apart} subnets")
    held = slice(len(archs) - args.held_apart, len(archs))  # the same held-apart subnets for every row and list
    acc_full = correct.mean(axis=1)
    lines = [
        f"{len(archs)} subnets fitting {cfg.device.name}, val split {n_split} canvases; "
        f"accuracy over subnets {100 * acc_full.min():.1f}–{100 * acc_full.max():.1f} % "
        f"(sd {100 * acc_full.std():.2f} points); one measurement: recalibration {recal:.3f} s + "
        f"{1000 * per_image:.3f} ms per image (medians of {args.time_subnets} subnets, 1 thread); "
        f"the last {args.held_apart} held apart",
        "",
        "| val images | SE at 90 % | reliability ρ (two disjoint sets) | predictor pairs | predictor ρ, same "
        "images | predictor ρ, independent reference | cost of the pairs (1 thread) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    print("\n" + "\n".join(lines))
    first: dict[str, str] = {}
    rows: list[dict[str, float]] = []
    for n in sizes:
        acc_n = correct[:, :n].mean(axis=1)
        other = correct[:, n : 2 * n].mean(axis=1) if 2 * n <= n_split else None
        rel = rho(acc_n, other) if other is not None else float("nan")
        for n_pairs in pairs:
            options = {**dict(cfg.strategy.predictor), "seed": args.seed, "n_samples": n_pairs}
            predictor = AccuracyPredictor(problem.space.encode, PredictorConfig(**options))
            predictor.fit(archs[:n_pairs], acc_n[:n_pairs].tolist())
            pred = predictor.predict_many(archs[held])
            rho_same = rho(pred, acc_n[held])
            rho_ref = rho(pred, reference[held]) if n <= half else float("nan")
            cost = n_pairs * (recal + n * per_image)
            se = 100 * (0.9 * 0.1 / n) ** 0.5
            line = f"| {n} | ±{se:.2f} | {rel:.3f} | {n_pairs} | {rho_same:.3f} | {rho_ref:.3f} | {cost:.0f} s |"
            print(line, flush=True)
            lines.append(line)
            rows.append(
                {"images": n, "pairs": n_pairs, "reliability": rel, "rho_same": rho_same, "rho_reference": rho_ref}
            )
            for kind, value in (("same", rho_same), ("reference", rho_ref)):
                if kind not in first and value >= 0.8:
                    first[kind] = f"{n} ({n_pairs} pairs)"
    none = "none of " + args.sizes
    last = (
        f"val images for predictor Spearman >= 0.8: on the same images {first.get('same', none)}; "
        f"on an independent reference {first.get('reference', none)}"
    )
    fig = curve_figure(rows, f"{len(archs)} subnets fitting {cfg.device.name}; ranked: the last {args.held_apart}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "rho_vs_val_size.png", dpi=120)
    if args.tracking == "mlflow":
        log_mlflow(cfg, "\n".join([*lines, "", last]), fig, rows)
    print(f"figure {out / 'rho_vs_val_size.png'}")
    print(last)


if __name__ == "__main__":
    main()
