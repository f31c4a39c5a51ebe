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
        [--methods layer,patch,rnnpool] [--tracking none|mlflow] [override ...]

Prints the int8 accuracy vs SRAM table (one row per budget, one column group per method; each accuracy with its 95 %
Wilson interval over the test images, `tinyflow.confidence`), the neighbouring budgets of a method whose int8
accuracies cannot be told apart, the patch-stage kernels against the rest for each patch model, and last
`patch vs layer int8 accuracy at the tightest budget: <+x.x> points` with whether the difference is inside its
interval (Newcombe).
With `--tracking mlflow` the table and the accuracy-vs-SRAM figure go to one MLflow run (kind=bench_joint).
"""

from __future__ import annotations

import argparse
import json
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


def log_mlflow(cfg: Any, text: str, fig: Any, results: dict[str, Any]) -> None:
    from tinyflow.tracking import activate

    tracker = build_plugin(cfg, "tracking")
    tags = {"run_name": "bench_joint", "kind": "bench_joint"}
    with activate(tracker), tracker.job(cfg, tags), tracker.stage("bench_joint"):
        tracker.log_text(text, "bench_joint.md")
        tracker.log_text(json.dumps(results, indent=2, default=str), "bench_joint.json")
        tracker.log_figure(fig, "accuracy_vs_sram.png")


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
    p.add_argument("--out", default="outputs/bench_joint")
    p.add_argument("--tracking", default="none", choices=("none", "mlflow"))
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: the project's outputs/mlflow.db)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. data.max_train_samples=2000")
    args = p.parse_args()
    args.resolutions = [int(r) for r in args.resolutions.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    methods = args.methods.split(",")
    out = Path(args.out).resolve()
    args.cache = str(out / "cache")
    torch.set_num_threads(1)
    start = time.perf_counter()

    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for stem in dict.fromkeys(SUPERNET_OF[m] for m in methods):  # each supernet once, then its methods' cells
        mine = [m for m in methods if SUPERNET_OF[m] == stem]
        cfg = compose_cfg(args, budgets[0], mine[0])
        ckpt, secs = train_supernet(cfg, out / f"supernet_{stem}")
        print(f"supernet ({stem} stem, {args.epochs} epochs, resolutions {args.resolutions}): {secs:.0f} s", flush=True)
        for b in budgets:
            for method in mine:
                cfg = compose_cfg(args, b, method)
                try:
                    rows[(method, b)] = deploy(cfg, ckpt, out / f"{method}_{b}kb")
                except Exception as exc:  # report what failed and go on: the other cells are still measured
                    rows[(method, b)] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"{method} @ {b} kB: {json.dumps(rows[(method, b)], default=str)}", flush=True)

    text = table(budgets, methods, rows)
    notes = noise_notes(budgets, methods, rows)
    if notes:
        text += "\n\nNeighbouring budgets that cannot be told apart:\n" + "\n".join(f"- {n}" for n in notes)
    print()
    print(text)
    for (m, b), r in sorted(rows.items()):
        if r.get("kernels"):
            k = r["kernels"]
            inside, rest = k["patch_stage_kernels"], k["rest_kernels"]
            print(
                f"{m} @ {b} kB: patch-stage kernels {inside} (mean {k['patch_stage_mean_kernel']:.2f}) vs the rest "
                f"{rest} (mean {k['rest_mean_kernel']:.2f})"
            )
    fig = figure(budgets, methods, rows)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "accuracy_vs_sram.png", dpi=120)
    results = {f"{m}@{b}": r for (m, b), r in rows.items()}
    (out / "bench_joint.json").write_text(json.dumps(results, indent=2, default=str))
    if args.tracking == "mlflow":
        cfg = compose_cfg(args, budgets[0], methods[0])
        with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base=None):
            uri = [f"tracking.uri={args.tracking_uri}"] if args.tracking_uri else []
            cfg.tracking = compose("config", overrides=["tracking=mlflow", *uri]).tracking
        log_mlflow(cfg, text, fig, results)
    print(f"wall time {time.perf_counter() - start:.0f} s; figure {out / 'accuracy_vs_sram.png'}")
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
    print(f"patch vs layer int8 accuracy at the tightest budget: {gain} points{ci}")


if __name__ == "__main__":
    main()
