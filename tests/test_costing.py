"""Search costs: the network the scheduler deploys, planned by it; the network's own MACs beside the plan's;
a scheduler's closed form where it offers one; joint search varies what the scheduler offers."""

from __future__ import annotations

import random

import pytest

from tinyflow.contracts import MemoryConfig, ScheduleBudget
from tinyflow.cost import model_flash_bytes
from tinyflow.ir import from_arch
from tinyflow.network import DeployedNetwork
from tinyflow.search.costing import SchedulerCosts
from tinyflow.search.problem import Costs
from tinyflow.search.space_opt import optimize_space
from tinyflow.testing import tiny_arch, tiny_space
from tinyflow_plugins.schedulers.layer import LayerScheduler
from tinyflow_plugins.schedulers.patch import PatchScheduler
from tinyflow_plugins.schedulers.rnnpool import RNNPoolScheduler

MEMORY = MemoryConfig()


def _costs(scheduler_cls, **kw) -> SchedulerCosts:
    return SchedulerCosts(MEMORY, lambda options: scheduler_cls(**options), **kw)


@pytest.mark.parametrize("largest", [False, True])
def test_layer_closed_form_equals_its_plan(largest: bool) -> None:
    arch = tiny_arch(largest)
    fast = _costs(LayerScheduler)(arch)
    plan = LayerScheduler().plan(from_arch(arch), MEMORY)
    assert (fast.peak_sram, fast.macs, fast.flash) == (
        plan.peak_live_bytes,
        plan.macs,
        model_flash_bytes(from_arch(arch)),
    )
    arena = _costs(LayerScheduler, metric="arena")(arch)  # every arch planned: the placed arena
    assert arena.peak_sram == plan.arena_bytes and arena.network_macs == fast.network_macs == plan.macs


def test_patch_costs_keep_the_networks_own_macs() -> None:
    arch = tiny_arch(largest=True)
    c = _costs(PatchScheduler)(arch, {"n_patches": 2, "patch_blocks": 3})
    own = from_arch(arch).macs()
    assert c.network_macs == own == c.capacity_macs
    assert c.macs > own  # the plan recomputes overlapping halos


def test_scheduler_that_rewrites_the_network_is_costed_on_what_it_deploys() -> None:
    arch = tiny_arch()
    sched = RNNPoolScheduler()
    net = sched.network(DeployedNetwork.plain(arch))
    assert net.kind != "static"
    c = _costs(RNNPoolScheduler)(arch)
    graph = net.graph()
    assert c.flash == model_flash_bytes(graph) and c.network_macs == graph.macs()
    assert c.peak_sram == sched.plan(graph, MEMORY).peak_live_bytes


def test_network_of_replaces_the_plain_network() -> None:
    arch = tiny_arch()
    other = tiny_arch(largest=True)
    c = _costs(LayerScheduler, network_of=lambda a: DeployedNetwork.plain(other))(arch)
    assert c == _costs(LayerScheduler)(other)
    assert _costs(LayerScheduler, network_of=DeployedNetwork.plain)(arch) == _costs(LayerScheduler)(arch)


def test_joint_search_schedule_comes_from_the_policy_not_from_genes() -> None:
    assert _costs(LayerScheduler).joint_choices(False) == {}
    assert _costs(LayerScheduler).joint_choices(True) == {}  # nothing free: the search is the arch's
    assert _costs(PatchScheduler).joint_choices(True) == {}  # the policy picks each candidate's schedule
    arch = tiny_arch(largest=True)
    peak = _costs(LayerScheduler)(arch).peak_sram
    roomy = _costs(PatchScheduler, budget=ScheduleBudget(peak, metric="peak_live"))(arch)
    assert roomy.schedule == () and roomy.peak_sram == peak  # the layer plan fits: no patches
    tight = _costs(PatchScheduler, budget=ScheduleBudget(peak - 1, metric="peak_live"))(arch)
    assert dict(tight.schedule).keys() == {"n_patches", "patch_blocks"} and tight.peak_sram < peak
    assert tight.macs > tight.network_macs  # what the chosen schedule recomputes


def test_space_scores_capacity_with_the_networks_own_macs() -> None:
    def inflated(arch) -> Costs:  # a plan that doubles the work, as a recomputing schedule would
        base = _costs(LayerScheduler)(arch)
        return Costs(base.peak_sram, base.flash, 2 * base.macs, network_macs=base.macs)

    space = tiny_space()
    res = optimize_space(space, [0.25], [32], inflated, 10**9, 10**9, samples_per_cell=5, progress=False)
    want = sorted(_costs(LayerScheduler)(a).macs for a in _sampled(space, 5))
    assert res.best.macs_fit.tolist() == want


def _sampled(space, n: int):
    rng = random.Random(0)
    cell = space.with_width_resolution(0.25, 32)
    return [cell.build(g["depths"], g["kernels"], g["expands"]) for g in (space.sample_genome(rng) for _ in range(n))]
