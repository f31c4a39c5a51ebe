"""Stages `space` and `search` with real components on tiny budgets: Hydra-composed config, a supernet trained
by the `ofa` trainer for a few batches, the memory engine's costs and plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tinyflow.arch.genome import Arch
from tinyflow.context import RunContext
from tinyflow.contracts import ScheduleBudget
from tinyflow.cost import arch_cost
from tinyflow.errors import BudgetError, ConfigError, TinyflowError
from tinyflow.ir import from_arch
from tinyflow.plugins import build_device, build_memory, build_plugin
from tinyflow.tracking import NullTracker

REPO = Path(__file__).resolve().parent.parent
TINY_PHASES = (
    "trainer.phases=[{name: full, epochs: 1, lr: 0.05, random_subnets: 0, kernel: [7], depth: [4], expand: [6]},"
    "{name: expand, epochs: 1, lr: 0.02, random_subnets: 1, kernel: null, depth: null, expand: null}]"
)


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return compose(
            "config",
            overrides=[
                "data=digits",
                "search_space=mcunet",
                "trainer=ofa",
                "tracking=none",
                "debug=fast",
                "search_space.resolution=16",
                "space.widths=[0.25,0.5]",
                "space.resolutions=[12,16]",
                "trainer.limit_train_batches=4",
                "trainer.progress=false",
                "trainer.recalib_batches=1",
                "data.max_eval_samples=64",
                "cache.search=false",  # every test measures its own subnets; nothing written under outputs/
                TINY_PHASES,
                *overrides,
            ],
        )


def _device_overrides(sram: int, flash: int = 4096) -> list[str]:
    return ["device=custom", f"device.sram_kb={sram / 1024:.3f}", f"device.flash_kb={flash}"]


@pytest.fixture(scope="module")
def supernet(tmp_path_factory):
    """A supernet of the default space at w0.5 r16, trained for a few batches, and its config."""
    torch.set_num_threads(1)
    cfg = compose_cfg()
    data = build_plugin(cfg, "data")
    data.setup()
    space = build_plugin(cfg, "search_space").bind(data)
    trainer = build_plugin(cfg, "trainer")
    out = trainer.fit(space, data, str(tmp_path_factory.mktemp("supernet")), NullTracker())
    return space, out.checkpoint


def _median_layer_peak(space, n: int = 60) -> int:
    import random

    from tinyflow.memory.runtime_overhead import predict
    from tinyflow.network import DeployedNetwork

    def sram(arch) -> int:  # the plan's SRAM figure: peak + the firmware's overhead on device=custom's Cortex-M7
        return arch_cost(arch).peak_live_bytes + predict(DeployedNetwork.plain(arch).graph(), None, "cortex_m7").total

    rng = random.Random(7)
    peaks = sorted(sram(space.sample(rng)) for _ in range(n))
    return peaks[n // 2]


@pytest.mark.slow
def test_search_stage_picks_a_fitting_arch(supernet, tmp_path):
    space, ckpt = supernet
    budget = _median_layer_peak(space)
    cfg = compose_cfg(*_device_overrides(budget), "scheduler=layer", "strategy.objective=supernet")
    from tinyflow.stages.search import run

    ctx = RunContext(output_dir=str(tmp_path), supernet_checkpoint=ckpt)
    ctx = run(cfg, ctx)
    arch = Arch.from_dict(ctx.arch)
    # verified by the memory engine on the chosen arch, not by the search's bookkeeping
    plan = build_plugin(cfg, "scheduler").plan(from_arch(arch), build_memory(cfg))
    device = build_device(cfg)
    assert plan.arena_bytes <= device.sram_budget_bytes
    summary = json.loads((tmp_path / "search" / "search_summary.json").read_text())
    assert summary["n_evaluations"] == 30  # debug=fast budget, distinct archs
    assert summary["search_score"] == pytest.approx(summary["supernet_val_accuracy"])  # the supernet was the objective
    assert summary["plan_arena_bytes"] == plan.arena_bytes
    assert 0.0 <= ctx.metrics["search_val_accuracy"] <= 1.0
    hist = json.loads((tmp_path / "search" / "history.json").read_text())
    assert [h["best_so_far"] for h in hist] == sorted(h["best_so_far"] for h in hist)
    assert (tmp_path / "search" / "search_pareto.png").stat().st_size > 0
    assert Arch.from_json((tmp_path / "search" / "best_arch.json").read_text()) == arch
    assert ctx.schedule_options == {}


@pytest.mark.slow
def test_patch_search_takes_each_schedule_from_the_policy(supernet, tmp_path):
    space, ckpt = supernet
    budget = _median_layer_peak(space) * 3 // 4  # most layer plans do not fit; patch plans of many do
    cfg = compose_cfg(*_device_overrides(budget), "scheduler=patch", "strategy.joint=true")
    from tinyflow.stages.search import run

    ctx = run(cfg, RunContext(output_dir=str(tmp_path), supernet_checkpoint=ckpt))
    summary = json.loads((tmp_path / "search" / "search_summary.json").read_text())
    arch = Arch.from_dict(ctx.arch)
    from tinyflow.search.costing import fixed_overhead

    share = build_device(cfg).sram_budget_bytes - fixed_overhead("cortex_m7")  # the policy's: less the firmware's
    layer_fits = arch_cost(arch).peak_live_bytes <= share
    # the layer plan whenever it fits, else the patch options the policy chose (no free genes)
    assert (ctx.schedule_options == {}) == layer_fits
    assert summary["schedule_used"].startswith("layer" if layer_fits else "patch")
    assert summary["schedule_reason"].startswith("the layer plan fits" if layer_fits else "the layer plan needs")
    sram = build_device(cfg).sram_budget_bytes
    scheduler = build_plugin(cfg, "scheduler", **ctx.schedule_options).for_budget(ScheduleBudget(share))
    plan = scheduler.plan(from_arch(arch), build_memory(cfg))
    assert plan.arena_bytes <= sram and plan.extra["schedule"] == ctx.schedule_options


def test_search_without_supernet_says_run_train(tmp_path):
    cfg = compose_cfg("scheduler=layer")
    from tinyflow.stages.search import run

    with pytest.raises(TinyflowError, match="Run the `train` stage"):
        run(cfg, RunContext(output_dir=str(tmp_path)))


@pytest.mark.slow
def test_predictor_objective(supernet, tmp_path):
    space, ckpt = supernet
    cfg = compose_cfg(*_device_overrides(_median_layer_peak(space)), "scheduler=layer", "strategy.objective=predictor")
    from tinyflow.stages.search import run

    ctx = run(cfg, RunContext(output_dir=str(tmp_path), supernet_checkpoint=ckpt))
    s = ctx.extra["search"]
    assert s["objective"] == "predictor" and s["predictor_test_pairs"] == 40  # 40 pairs, each held out once
    assert s["predictor_folds"] == 5
    assert -1.0 <= s["predictor_spearman"] <= 1.0
    # the chosen arch's reported accuracy is the supernet's, measured after the predictor-driven search
    assert ctx.metrics["search_val_accuracy"] == pytest.approx(s["supernet_val_accuracy"])


def test_space_stage_chooses_fitting_cell(tmp_path):
    base = compose_cfg("scheduler=layer")
    space = build_plugin(base, "search_space")
    budget = _median_layer_peak(space.with_width_resolution(0.5, 16))
    cfg = compose_cfg(*_device_overrides(budget), "scheduler=layer", "space.min_fit_share=0.0")
    from tinyflow.stages.space import run

    ctx = run(cfg, RunContext(output_dir=str(tmp_path)))
    stats = ctx.space_stats
    assert (ctx.width_mult, ctx.resolution) == tuple(stats["chosen"].values())
    fitting = [c for c in stats["cells"] if c["n_fit"]]
    assert max(c["mean_macs"] for c in fitting) == stats["chosen_mean_macs"]
    assert len(stats["cells"]) == 4 and all(c["n_samples"] == 50 for c in stats["cells"])
    assert Path(ctx.artifacts["space_cdf"]).stat().st_size > 0


def test_space_stage_nothing_fits(tmp_path):
    cfg = compose_cfg(*_device_overrides(512), "scheduler=layer")
    from tinyflow.stages.space import run

    with pytest.raises(BudgetError, match=r"Smallest peak SRAM seen: \d+ B .* closest cell: w=0.25, r=12"):
        run(cfg, RunContext(output_dir=str(tmp_path)))


def test_latency_budget_through_the_cost_model_plugin():
    import random

    from search_toys import toy_accuracy
    from tinyflow.search.problem import Budgets, SearchProblem
    from tinyflow.search.strategy import SearchSettings
    from tinyflow.stages.search import make_costs
    from tinyflow_plugins.strategies.evolution import EvolutionStrategy

    cfg = compose_cfg("cost_model=micronets", "device=stm32f746")
    space = build_plugin(cfg, "search_space")
    device = build_device(cfg)
    settings = SearchSettings(latency_budget_ms=1.0)
    costs, _ = make_costs(cfg, settings, device)
    cost_model = build_plugin(cfg, "cost_model")
    rng = random.Random(0)
    lats = sorted(cost_model.estimate(from_arch(space.sample(rng)), device).latency_ms for _ in range(40))
    budget = lats[len(lats) // 2]
    problem = SearchProblem(space, toy_accuracy, costs, Budgets(latency_ms=budget))
    res = EvolutionStrategy(population=10, iterations=3).search(problem, random.Random(1))
    assert all(r["latency_ms"] <= budget for r in res.evaluated)
    assert cost_model.estimate(from_arch(res.best), device).latency_ms <= budget
    with pytest.raises(ConfigError, match="cost_model=micronets"):
        p2 = SearchProblem(
            space,
            toy_accuracy,
            make_costs(compose_cfg("cost_model=analytic"), settings, device)[0],
            Budgets(latency_ms=1.0),
        )
        p2.feasible(p2.sample(rng))


@pytest.mark.slow
def test_predictor_pairs_on_a_val_prefix_measured_by_two_workers(supernet, tmp_path, caplog):
    """`strategy.val_images`: every subnet scored on the val split's first n images, recorded in the accuracy memo
    under its own name; a share of two cores measures the predictor's pairs in two worker processes."""
    from tinyflow.search.accuracy_memo import AccuracyMemo
    from tinyflow.stages.search import run

    space, ckpt = supernet
    cfg = compose_cfg(
        *_device_overrides(_median_layer_peak(space)),
        "scheduler=layer",
        "strategy.objective=predictor",
        "strategy.val_images=20",
        "cache.search=true",
        f"cache.dir={tmp_path / 'cache'}",
    )
    torch.set_num_threads(2)  # the job's share
    try:
        with caplog.at_level("INFO", logger="tinyflow.search.parallel_eval"):
            ctx = run(cfg, RunContext(output_dir=str(tmp_path), supernet_checkpoint=ckpt))
    finally:
        torch.set_num_threads(1)
    assert "measured by 2 worker processes" in caplog.text
    assert ctx.extra["search"]["val_images"] == 20 and ctx.metrics["search_val_images"] == 20
    (db,) = (tmp_path / "cache" / "search").glob("*.sqlite")
    memo = AccuracyMemo(db)
    rows = memo.items("val[:20]")
    assert len(rows) >= 40 and memo.items("val") == []  # the predictor's 40 pairs, never mixed with whole-split rows
    assert all(abs(v * 20 - round(v * 20)) < 1e-9 for _, v in rows)  # proportions of 20 images


def test_val_images_must_be_positive():
    with pytest.raises(ConfigError, match=r"strategy\.val_images"):
        build_plugin(compose_cfg("strategy.val_images=0"), "strategy")


def test_the_val_images_are_a_budget_in_compute():
    """`strategy.val_images_at_resolution`: the images × pixels of `val_images` at that resolution, at any larger
    one; never more images than configured."""
    from tinyflow.contracts import SearchSettings
    from tinyflow.stages.search import val_images_budget

    budgeted = SearchSettings(val_images=4000, val_images_at_resolution=48)
    assert val_images_budget(budgeted, (48,)) == 4000
    assert val_images_budget(budgeted, (32,)) == 4000
    assert val_images_budget(budgeted, (64,)) == 2250  # 4000 x (48/64)^2
    assert val_images_budget(SearchSettings(val_images=4000), (64,)) == 4000
    assert val_images_budget(SearchSettings(val_images=None, val_images_at_resolution=48), (64,)) is None
    with pytest.raises(ConfigError, match=r"strategy\.val_images_at_resolution"):
        SearchSettings(val_images=4000, val_images_at_resolution=0)
