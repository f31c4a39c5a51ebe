"""Benchmark: RNNPool on MobileNetV2 w0.35 — peak SRAM of the `rnnpool` plan against `layer` and `patch`, and
mnist5k accuracy of the network with and without RNNPool at the same training budget (standalone trainer).

Memory (int8, docs/design.md §6 conventions, both `memory.count_input` settings) at the resolutions given; accuracy on
mnist5k upscaled to `--acc-res` (1 channel, 10 classes), both networks trained with the same recipe, seed and
number of epochs. RNNPool options: the paper's Visual Wake Words setting (stem 8 channels, hidden 8/8, 6×6
patches, stride 4) and a width-matched variant (hidden2 4: 16 channels, what MobileNetV2 w0.35 has there).

    .venv/bin/python benchmarks/bench_rnnpool.py [--mem-res 160 224] [--acc-res 64] [--epochs 4] [--seeds 0 1 2]
        [--skip-accuracy]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tinyflow.arch import mobilenetv2
from tinyflow.contracts import MemoryConfig
from tinyflow.ir import from_arch
from tinyflow.memory import check_no_overlap, layer_plan
from tinyflow_plugins.schedulers.patch import PatchScheduler
from tinyflow_plugins.schedulers.rnnpool import RNNPoolScheduler

VARIANTS = {
    "rnnpool-vww": {"stem_channels": 8, "hidden1": 8, "hidden2": 8, "patch": 6, "stride": 4},
    "rnnpool-w": {"stem_channels": 8, "hidden1": 8, "hidden2": 4, "patch": 6, "stride": 4},
}


def memory_rows(resolution: int, count_input: bool) -> list[dict]:
    arch = mobilenetv2(0.35, resolution, num_classes=10)
    graph = from_arch(arch)
    memory = MemoryConfig(count_input=count_input)
    plans = {
        "layer": layer_plan(graph, memory),
        "patch(auto)": PatchScheduler(n_patches="auto", patch_blocks="auto").plan(graph, memory),
    }
    for name, opts in VARIANTS.items():
        plans[name] = RNNPoolScheduler(**opts).plan(graph, memory)
    rows = []
    for name, plan in plans.items():
        check_no_overlap(plan.tensors)
        note = plan.peak_layer
        if "n_patches" in plan.extra and "patch_blocks" in plan.extra:
            note += f"; {plan.extra['n_patches']}x{plan.extra['n_patches']} over {plan.extra['patch_blocks']} blocks"
        if "pooled_hw" in plan.extra:
            note += f"; cut at block {plan.extra['cut']}, {plan.extra['rnnpool_patches']} patches"
        rows.append(
            {
                "res": resolution,
                "count_input": count_input,
                "scheduler": name,
                "peak_kib": plan.peak_live_bytes / 1024,
                "arena_kib": plan.arena_bytes / 1024,
                "macs_m": plan.macs / 1e6,
                "params_k": plan.params / 1e3,
                "note": note,
            }
        )
    return rows


def train_accuracy(resolution: int, epochs: int, variant: str | None, seed: int) -> dict:
    """Train MobileNetV2 w0.35 (or its RNNPool rewrite `variant`) on mnist5k with conf/trainer/standalone.yaml's
    recipe, `epochs` epochs; one thread (the two runs go side by side)."""
    import torch
    import yaml

    from tinyflow.network import DeployedNetwork
    from tinyflow.tracking import NullTracker
    from tinyflow_plugins.data import Mnist5kData
    from tinyflow_plugins.trainers.standalone import StandaloneTrainer

    torch.set_num_threads(1)
    arch = mobilenetv2(0.35, resolution, num_classes=10, in_channels=1)
    conf = Path(__file__).resolve().parents[1] / "conf" / "trainer" / "standalone.yaml"
    recipe = {k: v for k, v in yaml.safe_load(conf.read_text()).items() if k not in ("_target_", "arch", "seed")}
    recipe.update(epochs=epochs, save_checkpoints=False)
    builder = None
    if variant:
        network = RNNPoolScheduler(**VARIANTS[variant]).network(DeployedNetwork.plain(arch))

        def builder(arch, dropout=0.0):  # the scheduler's network for this arch
            return network.build_model(dropout)

    trainer = StandaloneTrainer(arch=arch, model_builder=builder, seed=seed, **recipe)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = trainer.fit(None, Mnist5kData(seed=seed, batch_size=128), tmp, NullTracker())
    wall = time.perf_counter() - t0
    test = trainer.evaluate(arch, "test")
    params = sum(p.numel() for p in trainer.model.parameters())
    return {"val_acc": result.metrics["val_accuracy"], "test_acc": test, "train_s": wall, "params": params}


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mem-res", type=int, nargs="+", default=[160, 224])
    ap.add_argument("--acc-res", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write all rows here")
    args = ap.parse_args()

    rows = []
    for res in sorted(set(args.mem_res) | {args.acc_res}):
        for count_input in (True, False):
            rows += memory_rows(res, count_input)
    print("| res | count_input | scheduler | peak KiB | arena KiB | MACs M | params k | note |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['res']} | {r['count_input']} | {r['scheduler']} | {r['peak_kib']:.1f} | {r['arena_kib']:.1f} | "
            f"{r['macs_m']:.2f} | {r['params_k']:.1f} | {r['note']} |"
        )

    acc: dict[str, list[dict]] = {}
    if not args.skip_accuracy:
        from concurrent.futures import ProcessPoolExecutor

        names = {"baseline": None, "rnnpool-vww": "rnnpool-vww", "rnnpool-w": "rnnpool-w"}
        with ProcessPoolExecutor(len(names)) as pool:  # the three networks side by side, seed after seed
            for seed in args.seeds:
                futures = {n: pool.submit(train_accuracy, args.acc_res, args.epochs, v, seed) for n, v in names.items()}
                for n, f in futures.items():
                    acc.setdefault(n, []).append({"seed": seed, **f.result()})
        if args.json:  # before the tables, so a long run's numbers survive
            args.json.write_text(json.dumps({"memory": rows, "accuracy": acc}, indent=2))
        print(f"\nmnist5k at {args.acc_res}x{args.acc_res}, {args.epochs} epochs, same recipe, seeds {args.seeds}:")
        print("| network | val acc | test acc (mean ± std over seeds) | train s | params |")
        print("|---|---|---|---|---|")
        for name, runs in acc.items():
            va, te = [r["val_acc"] for r in runs], [r["test_acc"] for r in runs]
            print(
                f"| {name} | {statistics.mean(va):.4f} | {statistics.mean(te):.4f} ± {_std(te):.4f} "
                f"({', '.join(f'{t:.3f}' for t in te)}) | {statistics.mean(r['train_s'] for r in runs):.0f} | "
                f"{runs[0]['params']:,} |"
            )
        print(f"\ntrade-off at {args.acc_res}x{args.acc_res} (peak KiB with count_input true / false):")
        print("| network (scheduler) | peak KiB | MACs M | test acc |")
        print("|---|---|---|---|")
        by = {(r["res"], r["count_input"], r["scheduler"]): r for r in rows}
        for net, sched in (
            ("baseline", "layer"),
            ("baseline", "patch(auto)"),
            ("rnnpool-vww", None),
            ("rnnpool-w", None),
        ):
            key = sched or net
            t, f = by[(args.acc_res, True, key)], by[(args.acc_res, False, key)]
            te = [r["test_acc"] for r in acc[net]]
            print(
                f"| {net} ({sched or 'rnnpool'}) | {t['peak_kib']:.1f} / {f['peak_kib']:.1f} | "
                f"{t['macs_m']:.2f} / {f['macs_m']:.2f} | {statistics.mean(te):.4f} |"
            )
    if args.json:
        args.json.write_text(json.dumps({"memory": rows, "accuracy": acc}, indent=2))

    top = max(args.mem_res)
    by = {(r["res"], r["count_input"], r["scheduler"]): r for r in rows}
    ratio = by[(top, True, "layer")]["peak_kib"] / by[(top, True, "rnnpool-vww")]["peak_kib"]
    print(f"rnnpool_peak_reduction_vs_layer_r{top}: {ratio:.2f} x")


if __name__ == "__main__":
    main()
