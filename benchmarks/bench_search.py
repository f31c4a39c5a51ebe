"""Benchmark: evolution against random search at the same number of accuracy evaluations, and joint
architecture + patch-schedule search against layer-only search at the same SRAM budget.

Needs a trained supernet (the `train` stage's `supernet.ckpt`). Accuracy is the supernet's BN-recalibrated val
accuracy (`--objective supernet`) or the OFA predictor's (`--objective predictor`: an MLP trained on
`--predictor-samples` supernet-measured archs; its held-out rank correlation is printed). Either way the archs
each strategy chooses are then measured on the supernet, on val and on test, side by side. Supernet accuracies
are deterministic per arch, so they are cached on disk (`--cache`) across runs; a strategy's evaluation count
is the number of distinct archs *it* asked about, whatever the cache held.

    .venv/bin/python benchmarks/bench_search.py --checkpoint outputs/runs/<run>/train/supernet.ckpt \
        --seeds 3 --objective predictor [--joint-sram-kb 8] [hydra overrides, e.g. data=mnist5k]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir

from tinyflow.arch.genome import Arch
from tinyflow.contracts import Device
from tinyflow.plugins import build_device, build_memory, build_plugin
from tinyflow.search.costing import SchedulerCosts
from tinyflow.search.predictor import AccuracyPredictor, PredictorConfig, sample_pairs
from tinyflow.search.problem import Budgets, SearchProblem
from tinyflow.supernet import Supernet
from tinyflow_plugins.strategies.evolution import EvolutionStrategy
from tinyflow_plugins.strategies.random_search import RandomStrategy

REPO = Path(__file__).resolve().parent.parent


class DiskCache:
    """Supernet accuracy per (arch, split), persisted as JSON."""

    def __init__(self, path: Path, trainer: Any):
        self.path, self.trainer = path, trainer
        self.data: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
        self.new = 0

    def __call__(self, arch: Arch, split: str = "val") -> float:
        key = f"{split}|{arch.key()}"
        if key not in self.data:
            self.data[key] = float(self.trainer.evaluate(arch, split))
            self.new += 1
            if self.new % 25 == 0:
                self.save()
        return self.data[key]

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)


def run_strategy(
    kind: str, space, acc, costs, budgets, args, seed: int, joint: bool = False, n_evaluations: int | None = None
) -> dict[str, Any]:
    problem = SearchProblem(space, acc, costs, budgets, schedule_choices=costs.joint_choices(joint))
    if kind == "evolution":
        strat = EvolutionStrategy(
            population=args.population, iterations=args.iterations, n_evaluations=args.n_evaluations, joint=joint
        )
    else:
        strat = RandomStrategy(
            n_evaluations=n_evaluations or args.n_evaluations, population=args.population, joint=joint
        )
    t = time.perf_counter()
    res = strat.search(problem, random.Random(seed))
    return {"result": res, "evaluations": problem.n_evaluations, "seconds": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--objective", choices=["supernet", "predictor"], default="predictor")
    ap.add_argument("--n-evaluations", type=int, default=3100)
    ap.add_argument("--population", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--predictor-samples", type=int, default=400)
    ap.add_argument("--joint-sram-kb", type=float, default=None, help="also compare joint vs layer-only here")
    ap.add_argument("--cache", default=str(REPO / "outputs" / "bench_search_cache.json"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose("config", overrides=["tracking=none", *args.overrides])
    device: Device = build_device(cfg)
    memory = build_memory(cfg)
    supernet = Supernet.load(args.checkpoint, build_plugin(cfg, "data"))
    space = supernet.space
    Path(args.cache).parent.mkdir(parents=True, exist_ok=True)
    sup = DiskCache(Path(args.cache), supernet)
    print(
        f"supernet {args.checkpoint}: space w{space.width_mult:g} r{space.resolution}, "
        f"{space.in_channels} ch, {space.num_classes} classes; device {device.name} "
        f"SRAM budget {device.sram_budget_bytes / 1024:.1f} KiB, "
        f"flash budget {device.flash_budget_bytes / 1024:.0f} KiB"
    )

    layer_costs = SchedulerCosts(memory, lambda o: _layer())
    budgets = Budgets(device.sram_budget_bytes, device.flash_budget_bytes)
    if args.objective == "predictor":
        pc = PredictorConfig(n_samples=args.predictor_samples, seed=0)
        t = time.perf_counter()
        archs, accs = sample_pairs(space.sample, sup, pc.n_samples, seed=12345)
        pred = AccuracyPredictor(space.encode, pc)
        m = pred.fit(archs, accs)
        print(
            f"predictor: {len(archs)} supernet-measured archs in {time.perf_counter() - t:.0f} s; held-out "
            f"Spearman {m['predictor_spearman']:.3f}, Kendall {m['predictor_kendall']:.3f}, "
            f"RMSE {m['predictor_rmse'] * 100:.2f} points; val acc range {min(accs):.4f}–{max(accs):.4f}"
        )
        objective = pred.predict
    else:
        objective = sup

    rows = []
    for seed in range(args.seeds):
        used = None
        for kind in ("evolution", "random"):
            # random gets exactly the distinct evaluations evolution spent (evolution's children repeat archs)
            out = run_strategy(kind, space, objective, layer_costs, budgets, args, seed, n_evaluations=used)
            used = out["evaluations"]
            best = out["result"].best
            best_costs = layer_costs(best)
            rows.append(
                {
                    "seed": seed,
                    "strategy": kind,
                    "evaluations": out["evaluations"],
                    "objective": out["result"].best_score,
                    "val": sup(best, "val"),
                    "test": sup(best, "test"),
                    "seconds": out["seconds"],
                    "macs": best_costs.macs,
                    "peak": best_costs.peak_sram,
                }
            )
            r = rows[-1]
            print(
                f"seed {seed} {kind:9s}: {r['evaluations']} evaluations in {r['seconds']:.0f} s; best objective "
                f"{r['objective']:.4f}, supernet val {r['val']:.4f}, test {r['test']:.4f}, "
                f"{r['macs'] / 1e6:.2f} M MACs, peak {r['peak'] / 1024:.1f} KiB"
            )
    sup.save()

    def mean(kind: str, key: str) -> float:
        return statistics.mean(r[key] for r in rows if r["strategy"] == kind)

    print(f"\nmean over {args.seeds} seeds ({args.objective} objective, same evaluations per run):")
    for key in ("objective", "val", "test"):
        print(
            f"  {key:9s}: evolution {mean('evolution', key):.4f}  random {mean('random', key):.4f}  "
            f"difference {100 * (mean('evolution', key) - mean('random', key)):+.2f} points"
        )

    if args.joint_sram_kb:
        jdev = Device(
            "custom", sram_kb=args.joint_sram_kb, flash_kb=device.flash_kb, core=device.core, clock_mhz=device.clock_mhz
        )
        jb = Budgets(jdev.sram_budget_bytes, jdev.flash_budget_bytes)
        # both constrain the placed arena (every candidate planned), so neither gets the lower bound's optimism
        patch_costs = SchedulerCosts(memory, _patch, metric="arena")
        arena_layer = SchedulerCosts(memory, lambda o: _layer(), metric="arena")
        print(f"\njoint search vs layer-only at SRAM {args.joint_sram_kb:g} kB (evolution, same budget):")
        jrows = []
        for seed in range(args.seeds):
            for mode, costs, joint in (("layer-only", arena_layer, False), ("joint", patch_costs, True)):
                out = run_strategy("evolution", space, objective, costs, jb, args, seed, joint=joint)
                res = out["result"]
                best, sched = res.best, res.best_schedule
                from tinyflow.ir import from_arch

                real = (_patch(sched) if joint else _layer()).plan(from_arch(best), memory)
                jrows.append(
                    {
                        "seed": seed,
                        "mode": mode,
                        "objective": res.best_score,
                        "val": sup(best, "val"),
                        "test": sup(best, "test"),
                        "arena": real.arena_bytes,
                        "peak": real.peak_live_bytes,
                        "macs": real.macs,
                        "schedule": sched,
                    }
                )
                r = jrows[-1]
                print(
                    f"seed {seed} {mode:10s}: objective {r['objective']:.4f}, val {r['val']:.4f}, test "
                    f"{r['test']:.4f}, plan peak {r['peak'] / 1024:.1f} KiB arena {r['arena'] / 1024:.1f} KiB "
                    f"(budget {jdev.sram_budget_bytes / 1024:.1f}), {r['macs'] / 1e6:.2f} M MACs, {sched or 'layer'}"
                )
        sup.save()
        for key in ("objective", "val", "test"):
            j = statistics.mean(r[key] for r in jrows if r["mode"] == "joint")
            lo = statistics.mean(r[key] for r in jrows if r["mode"] == "layer-only")
            print(f"  {key:9s}: joint {j:.4f}  layer-only {lo:.4f}  difference {100 * (j - lo):+.2f} points")
    diff = 100 * (mean("evolution", "objective") - mean("random", "objective"))
    print(f"evolution_minus_random_best_{args.objective}_accuracy: {diff:+.3f} points")


def _patch(options: dict[str, int]) -> Any:
    from tinyflow_plugins.schedulers.patch import PatchScheduler

    return PatchScheduler(**options) if options else PatchScheduler()


def _layer() -> Any:
    from tinyflow_plugins.schedulers.layer import LayerScheduler

    return LayerScheduler()


if __name__ == "__main__":
    main()
