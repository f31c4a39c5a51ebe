"""MCUNetV2's claim on the default task: joint patch search vs layer-only search vs an RNNPool stem at equal SRAM.

One OFA supernet of the default space (cluttered MNIST, width `--width`) is trained with elastic resolution over
`--resolutions` (one drawn per batch); the layer-only search (`scheduler=layer`) and the joint patch search
(`scheduler=patch`: every candidate's schedule from the policy, docs/design.md §7) both search it — arch and input
resolution — at each SRAM budget. The RNNPool method trains a second supernet of the same budget with an RNNPool stem
(`trainer.stem=rnnpool scheduler=rnnpool`) and searches it the same way. Each searched network is then fine-tuned,
int8-quantized and planned by the pipeline's own stages (search, finetune, quantize, schedule), so the SRAM is the
deployed int8 network's placed arena and the accuracy its int8 test accuracy. Trainings run once, in process, and
subnet accuracies are shared through the accuracy memo (`--cache`).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_joint.py [--budgets 16,24,32] [--epochs 10]
        [--evaluations 40] [--finetune-epochs 3] [--resolutions 32,40,48,64] [--width 0.5] [--out DIR]
        [--methods layer,patch,rnnpool] [--seed 0 | --seeds 0,1,2] [--tracking none|mlflow] [override ...]

Prints the int8 accuracy vs SRAM table (one row per budget, one column group per method; each accuracy with its 95 %
Wilson interval over the test images, `tinyflow.confidence`), the neighbouring budgets of a method whose int8
accuracies cannot be told apart, the patch-stage kernels against the rest for each patch model, and last
`patch vs layer int8 accuracy at the tightest budget: <+x.x> points` with whether the difference is inside its
interval (Newcombe).

With `--seeds`, every seed trains its own supernets and searches them (its own table, as above, under
`<out>/seed<k>/`); then the summary over seeds: per method and budget the int8 accuracy's mean ± sd (n seeds), the
accuracy-vs-SRAM figure with the sd as error bars, and last
`joint patch matches layer-only's best accuracy at <x.x>x less SRAM` — layer-only's best mean over the budgets, the
smallest budget where it reaches it, against the smallest budget whose joint-patch mean is within 1 point of it
(MCUNetV2's "same accuracy at 4x less SRAM"); a single seed prints the same line from its one value per cell.
With `--tracking mlflow` the tables and the figure go to one MLflow run (kind=bench_joint).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from hydra import compose, initialize_config_dir

import tinyflow
from tinyflow.arch.genome import Arch
from tinyflow.confidence import difference, format_accuracy
from tinyflow.context import RunContext
from tinyflow.plugins import build_plugin
from tinyflow.search.arch_figure import patch_stage_kernels
from tinyflow.stages import finetune, quantize, schedule, search  # imported now: a run uses the code it started with
from tinyflow.tracking import NullTracker

METHODS = {
    "layer": ["scheduler=layer"],
    "patch": ["scheduler=patch"],
    "rnnpool": ["trainer.stem=rnnpool", "scheduler=rnnpool"],
}
SUPERNET_OF = {"layer": "conv", "patch": "conv", "rnnpool": "rnnpool"}


def compose_cfg(args: argparse.Namespace, sram_kb: int, method: str) -> Any:
    rs = ",".join(str(r) for r in args.resolutions)
    overrides = [
        "device=custom",
        f"device.sram_kb={sram_kb}",
        f"device.flash_kb={args.flash_kb}",
        "tracking=none",
        f"cache.dir={args.cache}",
        f"search_space.width_mult={args.width}",
        f"search_space.resolution={max(args.resolutions)}",
        f"trainer.resolutions=[{rs}]",
        f"trainer.epochs={args.epochs}",
        "trainer.progress=false",
        "trainer.resume=true",  # an interrupted benchmark continues its trainings from their last epoch
        "strategy=evolution",
        "strategy.objective=supernet",
        f"strategy.n_evaluations={args.evaluations}",
        f"strategy.population={max(4, args.evaluations // 3)}",
        "strategy.progress=false",
        f"finetune.epochs={args.finetune_epochs}",
        f"seed={args.seed}",
        *METHODS[method],
        *args.overrides,
    ]
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base=None):
        return compose("config", overrides=overrides)


def train_supernet(cfg: Any, workdir: Path) -> tuple[str, float]:
    """The supernet of the configured space with elastic resolution (the trainer's `resolutions`)."""
    data = build_plugin(cfg, "data")
    data.setup()
    space = build_plugin(cfg, "search_space").bind(data)
    start = time.perf_counter()
    result = build_plugin(cfg, "trainer").fit(space, data, str(workdir), NullTracker())
    return result.checkpoint, time.perf_counter() - start


def deploy(cfg: Any, checkpoint: str, out: Path) -> dict[str, Any]:
    """search -> finetune -> quantize -> schedule on one supernet; the deployed int8 network's figures."""
    start = time.perf_counter()
    ctx = RunContext(output_dir=str(out), supernet_checkpoint=checkpoint)
    for stage in (search, finetune, quantize, schedule):
        ctx = stage.run(cfg, ctx)
    arch = Arch.from_dict(ctx.arch)
    summary = json.loads((out / "search" / "search_summary.json").read_text())
    plan = ctx.plan or {}
    pb = int(plan.get("patch_blocks") or 0)
    return {
        "int8": ctx.metrics.get("accuracy_int8"),
        "float": ctx.metrics.get("accuracy_float"),
        "test_images": ctx.metrics.get("test_images"),  # the accuracies' n: their 95 % intervals
        **{k: v for k, v in ctx.metrics.items() if k.startswith("accuracy_") and "_ci95_" in k},
        "arena_kib": plan.get("arena_bytes", 0) / 1024,
        "fits": plan.get("fits_sram"),
        "resolution": arch.resolution,
        "macs_m": plan.get("macs", 0) / 1e6,
        "schedule": plan.get("schedule_used") or plan.get("scheduler"),
        "search_schedule": summary.get("schedule_used"),
        "kernels": patch_stage_kernels(arch, pb) if pb else None,
        "seconds": time.perf_counter() - start,
    }


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def _with_ci(r: dict[str, Any], key: str) -> str:
    """`84.8 % (95 % CI 81.4–87.7, Wilson, n = 500)`, or the accuracy alone without the test-set size."""
    return format_accuracy(r.get(key), r.get("test_images"))


def _told_apart(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float, float] | None:
    """(b − a, low, high) of two cells' int8 accuracies (Newcombe's 95 % interval), None without their sizes."""
    if a.get("int8") is None or b.get("int8") is None or not a.get("test_images") or not b.get("test_images"):
        return None
    return difference(b["int8"], int(b["test_images"]), a["int8"], int(a["test_images"]))


def noise_notes(budgets: list[int], methods: list[str], rows: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """Per method, the neighbouring budgets whose int8 accuracies cannot be told apart."""
    out = []
    for m in methods:
        for lo, hi in pairwise(budgets):
            d = _told_apart(rows.get((m, lo), {}), rows.get((m, hi), {}))
            if d is not None and d[1] <= 0.0 <= d[2]:
                out.append(
                    f"{m}: {lo} → {hi} kB int8 {100 * d[0]:+.1f} points (95 % CI {100 * d[1]:+.1f}…{100 * d[2]:+.1f}, "
                    "Newcombe): cannot be told apart"
                )
    return out


def table(budgets: list[int], methods: list[str], rows: dict[tuple[str, int], dict[str, Any]]) -> str:
    head = "| SRAM budget | " + " | ".join(methods) + " |"
    lines = [head, "| --- |" + " --- |" * len(methods)]
    for b in budgets:
        cells = []
        for m in methods:
            r = rows.get((m, b))
            if r is None or "error" in r:
                cells.append("failed" if r is None else f"failed: {r['error'][:60]}")
                continue
            cells.append(
                f"{_with_ci(r, 'int8')} int8 ({_pct(r['float'])} float), r{r['resolution']}, "
                f"{r['arena_kib']:.1f} KiB, {r['macs_m']:.2f} M MACs, {r['schedule']}"
            )
        lines.append(f"| {b} kB | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(budgets: list[int], methods: list[str], rows: dict[tuple[str, int], dict[str, Any]]) -> Any:
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        pts = [
            (rows[(m, b)]["arena_kib"], 100 * rows[(m, b)]["int8"]) for b in budgets if "int8" in rows.get((m, b), {})
        ]
        if pts:
            ax.plot(*zip(*sorted(pts)), marker="o", label=m)
    for b in budgets:
        ax.axvline(b, color="grey", lw=0.6, ls=":")  # device.sram_kb counts KiB
    ax.set_xlabel("SRAM used by the deployed int8 network (KiB; dotted: budgets)")
    ax.set_ylabel("int8 test accuracy (%)")
    ax.set_title("cluttered MNIST: accuracy vs SRAM (same training budget)")
    ax.legend()
    fig.tight_layout()
    return fig


def by_name(cells: dict[tuple[str, int], Any]) -> dict[str, Any]:
    """Cells keyed `method@budget`, as the JSON files hold them."""
    return {f"{m}@{b}": v for (m, b), v in cells.items()}


def seed_stats(
    per_seed: list[dict[tuple[str, int], dict[str, Any]]], budgets: list[int], methods: list[str]
) -> dict[tuple[str, int], dict[str, Any]]:
    """Per (method, budget), over the seeds whose cell has an int8 accuracy: mean, sd (0 for one seed), n, the
    values, the mean arena (KiB) and the resolutions chosen."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for m in methods:
        for b in budgets:
            cells = [rows[(m, b)] for rows in per_seed if rows.get((m, b), {}).get("int8") is not None]
            if not cells:
                continue
            values = [float(c["int8"]) for c in cells]
            out[(m, b)] = {
                "mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "n": len(values),
                "values": values,
                "arena_kib": statistics.fmean(float(c.get("arena_kib", 0.0)) for c in cells),
                "resolutions": [c.get("resolution") for c in cells],
            }
    return out


def match_line(stats: dict[tuple[str, int], dict[str, Any]], budgets: list[int], within: float = 0.01) -> str:
    """`joint patch matches layer-only's best accuracy at <x.x>x less SRAM`: layer-only's best mean and the smallest
    budget reaching it, against the smallest budget whose patch mean is within `within` of it."""
    layer = [(b, stats[("layer", b)]["mean"]) for b in budgets if ("layer", b) in stats]
    patch = [(b, stats[("patch", b)]["mean"]) for b in budgets if ("patch", b) in stats]
    if not layer or not patch:
        return "joint patch vs layer-only: no budget with both methods measured"
    best = max(v for _, v in layer)
    at = min(b for b, v in layer if v == best)
    matched = [b for b, v in sorted(patch) if v >= best - within]
    if not matched:
        return (
            f"joint patch does not match layer-only's best accuracy ({100 * best:.1f} % at {at} kB) within "
            f"{100 * within:.0f} point at any budget up to {max(b for b, _ in patch)} kB"
        )
    return f"joint patch matches layer-only's best accuracy at {at / matched[0]:.1f}x less SRAM"


def summary_table(stats: dict[tuple[str, int], dict[str, Any]], budgets: list[int], methods: list[str]) -> str:
    """Mean ± sd of the int8 accuracy per cell over the seeds, with n, the mean arena and the resolutions."""
    lines = ["| SRAM budget | " + " | ".join(methods) + " |", "| --- |" + " --- |" * len(methods)]
    for b in budgets:
        cells = []
        for m in methods:
            st = stats.get((m, b))
            if st is None:
                cells.append("—")
                continue
            rs = "/".join(f"r{r}" for r in st["resolutions"])
            cells.append(
                f"{100 * st['mean']:.1f} ± {100 * st['sd']:.1f} % (n = {st['n']}; {rs}; {st['arena_kib']:.1f} KiB)"
            )
        lines.append(f"| {b} kB | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_figure(stats: dict[tuple[str, int], dict[str, Any]], budgets: list[int], methods: list[str]) -> Any:
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        pts = [(b, 100 * stats[(m, b)]["mean"], 100 * stats[(m, b)]["sd"]) for b in budgets if (m, b) in stats]
        if pts:
            xs, ys, es = zip(*pts)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=m)
    n = max((st["n"] for st in stats.values()), default=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xlabel("SRAM budget (KiB)")
    ax.set_ylabel("int8 test accuracy (%), mean ± sd")
    ax.set_title(f"cluttered MNIST: accuracy vs SRAM over {n} seed(s)")
    ax.legend()
    fig.tight_layout()
    return fig


def log_mlflow(cfg: Any, text: str, figures: dict[str, Any], results: dict[str, Any]) -> None:
    from tinyflow.tracking import activate

    tracker = build_plugin(cfg, "tracking")
    tags = {"run_name": "bench_joint", "kind": "bench_joint"}
    with activate(tracker), tracker.job(cfg, tags), tracker.stage("bench_joint"):
        tracker.log_text(text, "bench_joint.md")
        tracker.log_text(json.dumps(results, indent=2, default=str), "bench_joint.json")
        for name, fig in figures.items():
            tracker.log_figure(fig, name)


def run_seed(
    args: argparse.Namespace, budgets: list[int], methods: list[str], out: Path
) -> tuple[dict[tuple[str, int], dict[str, Any]], str, Any]:
    """One seed: its supernets trained, every cell searched and deployed; its rows, report and figure."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for stem in dict.fromkeys(SUPERNET_OF[m] for m in methods):  # each supernet once, then its methods' cells
        mine = [m for m in methods if SUPERNET_OF[m] == stem]
        cfg = compose_cfg(args, budgets[0], mine[0])
        ckpt, secs = train_supernet(cfg, out / f"supernet_{stem}")
        print(
            f"seed {args.seed}: supernet ({stem} stem, {args.epochs} epochs, resolutions {args.resolutions}): "
            f"{secs:.0f} s",
            flush=True,
        )
        for b in budgets:
            for method in mine:
                cfg = compose_cfg(args, b, method)
                try:
                    rows[(method, b)] = deploy(cfg, ckpt, out / f"{method}_{b}kb")
                except Exception as exc:  # report what failed and go on: the other cells are still measured
                    rows[(method, b)] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"seed {args.seed}: {method} @ {b} kB: {json.dumps(rows[(method, b)], default=str)}", flush=True)

    text = f"seed {args.seed}\n\n" + table(budgets, methods, rows)
    notes = noise_notes(budgets, methods, rows)
    if notes:
        text += "\n\nNeighbouring budgets that cannot be told apart:\n" + "\n".join(f"- {n}" for n in notes)
    for (m, b), r in sorted(rows.items()):
        if r.get("kernels"):
            k = r["kernels"]
            text += (
                f"\n{m} @ {b} kB: patch-stage kernels {k['patch_stage_kernels']} (mean "
                f"{k['patch_stage_mean_kernel']:.2f}) vs the rest {k['rest_kernels']} "
                f"(mean {k['rest_mean_kernel']:.2f})"
            )
    tight = budgets[0]
    lay, pat = rows.get(("layer", tight), {}).get("int8"), rows.get(("patch", tight), {}).get("int8")
    gain = "n/a" if lay is None or pat is None else f"{100 * (pat - lay):+.1f}"
    d = _told_apart(rows.get(("layer", tight), {}), rows.get(("patch", tight), {}))
    ci = (
        ""
        if d is None
        else f" (95 % CI {100 * d[1]:+.1f}…{100 * d[2]:+.1f}, Newcombe"
        + ("; cannot be told apart)" if d[1] <= 0.0 <= d[2] else ")")
    )
    text += f"\npatch vs layer int8 accuracy at the tightest budget: {gain} points{ci}"
    out.mkdir(parents=True, exist_ok=True)
    fig = figure(budgets, methods, rows)
    fig.savefig(out / "accuracy_vs_sram.png", dpi=120)
    (out / "bench_joint.json").write_text(json.dumps(by_name(rows), indent=2, default=str))
    return rows, text, fig


def read_seed(
    seed: int, out: Path, budgets: list[int], methods: list[str]
) -> tuple[dict[tuple[str, int], dict[str, Any]], str, Any]:
    """A seed measured earlier (`--reuse`): its rows from `<out>/bench_joint.json`, its table and figure."""
    saved = json.loads((out / "bench_joint.json").read_text())
    rows = {(k.rsplit("@", 1)[0], int(k.rsplit("@", 1)[1])): v for k, v in saved.items()}
    text = f"seed {seed} (read back from {out / 'bench_joint.json'})\n\n" + table(budgets, methods, rows)
    return rows, text, figure(budgets, methods, rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", default="16,24,32", help="SRAM budgets in kB (device=custom)")
    p.add_argument("--flash-kb", type=int, default=256)
    p.add_argument("--epochs", type=int, default=10, help="supernet epochs (trainer.epochs), the same per method")
    p.add_argument("--evaluations", type=int, default=40, help="subnets each search measures (objective=supernet)")
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--resolutions", default="32,40,48,64")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--methods", default="layer,patch,rnnpool")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None, help="comma-separated seeds, each its own trainings (default: --seed)")
    p.add_argument("--out", default="outputs/bench_joint")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="a seed whose <out>/seed<k>/bench_joint.json exists is read back, not rerun (seeds run as separate "
        "processes with --seeds <k> --out <out>/seed<k>, then summarized together)",
    )
    p.add_argument("--tracking", default="none", choices=("none", "mlflow"))
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: the project's outputs/mlflow.db)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. data.max_train_samples=2000")
    args = p.parse_args()
    args.resolutions = [int(r) for r in args.resolutions.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    methods = args.methods.split(",")
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    out = Path(args.out).resolve()
    args.cache = str(out / "cache")  # shared by the seeds: trainings and subnet accuracies are keyed by seed
    torch.set_num_threads(1)
    start = time.perf_counter()

    per_seed, texts, figures = [], [], {}
    for seed in seeds:
        args.seed = seed
        seed_out = out / f"seed{seed}" if len(seeds) > 1 else out
        if args.reuse and (seed_out / "bench_joint.json").is_file():
            rows, text, figures[f"seed{seed}_accuracy_vs_sram.png"] = read_seed(seed, seed_out, budgets, methods)
        else:
            rows, text, figures[f"seed{seed}_accuracy_vs_sram.png"] = run_seed(args, budgets, methods, seed_out)
        per_seed.append(rows)
        texts.append(text)
        print()
        print(text, flush=True)
    stats = seed_stats(per_seed, budgets, methods)
    summary = f"int8 test accuracy over seeds {seeds} (mean ± sd):\n\n" + summary_table(stats, budgets, methods)
    last = match_line(stats, budgets)
    report = "\n\n".join([*texts, summary, last])
    print()
    print(summary)
    fig = seeds_figure(stats, budgets, methods)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "accuracy_vs_sram_seeds.png", dpi=120)
    results = {
        "seeds": seeds,
        "per_seed": [by_name(rows) for rows in per_seed],
        "summary": by_name(stats),
        "last_line": last,
    }
    (out / "bench_joint_seeds.json").write_text(json.dumps(results, indent=2, default=str))
    if args.tracking == "mlflow":
        cfg = compose_cfg(args, budgets[0], methods[0])
        with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base=None):
            uri = [f"tracking.uri={args.tracking_uri}"] if args.tracking_uri else []
            cfg.tracking = compose("config", overrides=["tracking=mlflow", *uri]).tracking
        log_mlflow(cfg, report, {**figures, "accuracy_vs_sram_seeds.png": fig}, results)
    print(f"wall time {time.perf_counter() - start:.0f} s; figure {out / 'accuracy_vs_sram_seeds.png'}")
    print(last)


if __name__ == "__main__":
    main()
