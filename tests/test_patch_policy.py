"""The patch scheduler's policy: the cheapest plan that fits a budget (docs/design.md §7)."""

from __future__ import annotations

import logging

import pytest

from tinyflow.arch import mobilenetv2
from tinyflow.contracts import ScheduleBudget
from tinyflow.errors import ConfigError
from tinyflow.ir import from_arch
from tinyflow.memory import check_no_overlap, layer_plan
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.patch_plan import patch_plan
from tinyflow.memory.patch_policy import separable_extra_macs
from tinyflow.memory.receptive_field import graph_patch_geometry, max_patch_blocks
from tinyflow_plugins.schedulers.patch import PatchScheduler

MEM = MemoryConfig()
GRIDS = (2, 3, 4, 5, 6, 7, 8)


@pytest.fixture(scope="module")
def net():
    return from_arch(mobilenetv2(0.35, 96))


@pytest.fixture(scope="module")
def every_patch_plan(net):
    """(patch_blocks, n_patches) -> placed patch plan, for every valid candidate (brute force)."""
    out = {}
    for pb in range(1, max_patch_blocks(net) + 1):
        try:
            hw = min(graph_patch_geometry(net, pb, 1).ops[-1].out_hw)
        except ConfigError:
            continue
        for n in GRIDS:
            if n <= hw:
                out[(pb, n)] = patch_plan(net, MEM, pb, n)
    return out


def _bound(budget: int, **options) -> PatchScheduler:
    return PatchScheduler(**options).for_budget(ScheduleBudget(budget))


def test_layer_plan_when_it_fits(net):
    layer = layer_plan(net, MEM)
    plan = _bound(layer.arena_bytes).plan(net, MEM)
    assert plan.extra["schedule"] == {} and plan.extra["schedule_used"] == "layer"
    assert plan.arena_bytes == layer.arena_bytes and plan.macs == layer.macs
    assert plan.extra["schedule_reason"].startswith("the layer plan fits") and plan.extra["fits_budget"]


@pytest.mark.parametrize("share", [0.9, 0.6, 0.4])
def test_fewest_extra_macs_among_the_fitting_patch_plans(net, every_patch_plan, share):
    layer = layer_plan(net, MEM)
    budget = int(layer.arena_bytes * share)
    plan = _bound(budget).plan(net, MEM)
    check_no_overlap(plan.tensors)
    cap = 0.5 * layer.macs
    fitting = [p for p in every_patch_plan.values() if p.arena_bytes <= budget and p.extra["extra_macs"] <= cap]
    assert fitting, "the budget should admit a patch plan"
    assert plan.extra["fits_budget"] and plan.arena_bytes <= budget
    assert plan.extra["extra_macs"] == min(p.extra["extra_macs"] for p in fitting)
    assert plan.extra["extra_macs"] <= cap
    assert "fewest extra MACs" in plan.extra["schedule_reason"]


def test_nothing_fits_gives_the_lowest_peak_and_by_how_much(net, every_patch_plan):
    budget = 4096
    plan = _bound(budget, max_extra_macs=None).for_budget(ScheduleBudget(budget, strict=True)).plan(net, MEM)
    lowest = min([layer_plan(net, MEM).peak_live_bytes] + [p.peak_live_bytes for p in every_patch_plan.values()])
    assert plan.peak_live_bytes == lowest
    assert not plan.extra["fits_budget"]
    assert plan.extra["over_budget_bytes"] == plan.arena_bytes - budget
    over = (plan.arena_bytes - budget) / 1024
    assert plan.extra["schedule_reason"].startswith(f"does not fit by {over:.1f} KiB")


def test_a_cost_function_ranks_the_fitting_plans(net, every_patch_plan):
    class Latency:  # a cost model whose latency prefers fewer patches over fewer MACs
        name = "toy"

        def estimate(self, graph, device, plan):
            from tinyflow.contracts import CostReport

            return CostReport(plan.macs, 0, 0, latency_ms=float(plan.extra.get("n_patches") or 0))

    layer = layer_plan(net, MEM)
    budget = int(layer.arena_bytes * 0.6)
    plan = PatchScheduler().for_budget(ScheduleBudget(budget, device=object(), cost_model=Latency())).plan(net, MEM)
    fitting = [
        p for p in every_patch_plan.values() if p.arena_bytes <= budget and p.extra["extra_macs"] <= 0.5 * layer.macs
    ]
    assert plan.extra["n_patches"] == min(p.extra["n_patches"] for p in fitting)
    assert "lowest estimated latency" in plan.extra["schedule_reason"]


def test_fixed_options_used_when_they_fit_else_the_policy(net):
    layer = layer_plan(net, MEM)
    fixed = patch_plan(net, MEM, 4, 3)
    plan = _bound(layer.arena_bytes * 2, n_patches=3, patch_blocks=4).plan(net, MEM)
    assert plan.extra["schedule"] == {"patch_blocks": 4, "n_patches": 3}
    assert plan.arena_bytes == fixed.arena_bytes and "as configured" in plan.extra["schedule_reason"]
    tight = _bound(fixed.arena_bytes - 1, n_patches=3, patch_blocks=4).plan(net, MEM)
    assert tight.extra["schedule_reason"].startswith("the configured patch 3x3 over 4 blocks needs")
    assert tight.extra["schedule"] != {"patch_blocks": 4, "n_patches": 3}


def test_a_grid_too_fine_is_clamped_in_a_search_and_an_error_when_analysed(net, caplog):
    hw = min(graph_patch_geometry(net, 7, 1).ops[-1].out_hw)
    with caplog.at_level(logging.WARNING):
        plan = _bound(10**9, n_patches=hw + 5, patch_blocks=7).plan(net, MEM)
    assert plan.extra["n_patches"] == hw and "clamped to" in caplog.text
    with pytest.raises(ConfigError, match=r"scheduler\.n_patches = \d+.*finer than"):
        PatchScheduler(n_patches=hw + 5, patch_blocks=7).for_budget(ScheduleBudget(10**9, strict=True)).plan(net, MEM)


def test_separable_extra_macs_equal_the_two_axis_walk(net):
    for pb in (2, 4, 7):
        for n in (2, 3, 5):
            assert separable_extra_macs(net, pb, n) == graph_patch_geometry(net, pb, n).extra_macs


def test_closed_form_only_when_the_layer_plan_is_the_answer(net):
    arch = mobilenetv2(0.35, 96)
    peak = layer_plan(net, MEM).peak_live_bytes
    fits = PatchScheduler().for_budget(ScheduleBudget(peak, metric="peak_live"))
    assert fits.arch_costs(arch, MEM).peak_live_bytes == peak
    assert PatchScheduler().for_budget(ScheduleBudget(peak - 1, metric="peak_live")).arch_costs(arch, MEM) is None
    assert PatchScheduler().arch_costs(arch, MEM) is None  # unbound: nothing to compare with
