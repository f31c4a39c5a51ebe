"""The `patch` scheduler: MCUNetV2 calibration, hand-derived peaks, real arena plans, auto search, bad input."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

import tinyflow
from tinyflow.arch import Arch, Block, mobilenetv2
from tinyflow.arch.zoo import mbv2_rd
from tinyflow.contracts import Scheduler
from tinyflow.errors import ConfigError
from tinyflow.ir import from_arch
from tinyflow.memory import check_no_overlap, layer_plan
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.patch_plan import patch_plan
from tinyflow.plugins import build_plugin
from tinyflow_plugins.schedulers.patch import PatchScheduler

MEM = MemoryConfig()


@pytest.fixture(scope="module")
def mbv2():
    return from_arch(mobilenetv2())


def _checked(plan):
    check_no_overlap(plan.tensors)
    assert plan.arena_bytes >= plan.peak_live_bytes
    assert all(t.offset >= 0 for t in plan.tensors if t.size > 0)
    assert sum(s.macs for s in plan.steps) == plan.macs
    return plan


def test_mbv2_4x4_over_stem_and_4_blocks(mbv2):
    plan = _checked(PatchScheduler(n_patches=4, patch_blocks=5).plan(mbv2, MEM))
    x = plan.extra
    assert x["input_patch_hw"] == [75, 75]
    assert x["patch_stage_output_shape"] == [1, 32, 28, 28]
    assert x["output_patch_hw"] == [7, 7]
    # the patch stage's layer-wise MACs are those of the same nodes in the layer plan
    layer = layer_plan(mbv2, MEM)
    stage = {r["name"] for r in plan.per_layer if r.get("patched")}
    assert x["patch_stage_macs_layerwise"] == sum(s.macs for s in layer.steps if s.node in stage)
    assert x["patch_stage_macs"] == sum(s.macs for s in plan.steps if s.patch is not None)
    assert plan.macs == layer.macs + x["extra_macs"]


def test_mbv2_rd_input_patch_is_63():
    plan = _checked(PatchScheduler(n_patches=4, patch_blocks=5).plan(from_arch(mbv2_rd()), MEM))
    assert plan.extra["input_patch_hw"] == [63, 63]


def test_mbv2_peak_lowered_4x_with_at_most_15pct_extra_macs(mbv2):
    layer = layer_plan(mbv2, MEM)
    plan = _checked(patch_plan(mbv2, MEM, patch_blocks=5, n_patches=4))
    assert layer.peak_live_bytes == 1_404_928
    # hand-derived: the full input (224²·3) and the assembled stage output (28²·32) stay alive; in an interior
    # patch block 1 (stride 2) reads a 35×35 region of block 0's output (16 ch) and expands it to 96 channels
    assert plan.peak_live_bytes == 224 * 224 * 3 + 28 * 28 * 32 + 35 * 35 * 16 + 35 * 35 * 96 == 312_816
    assert plan.peak_layer == "blocks.1.expand"
    assert layer.peak_live_bytes / plan.peak_live_bytes >= 4.0  # 4.49x
    assert plan.extra["extra_macs"] / layer.macs <= 0.15  # 9.28 %
    assert plan.extra["extra_macs"] == 27_919_344


def test_streamed_input_peak_moves_after_the_patch_stage(mbv2):
    mem = MemoryConfig(count_input=False)
    plan = _checked(patch_plan(mbv2, mem, patch_blocks=5, n_patches=4))
    # block 4 (the first after the stage, residual): 28²·192 expanded (depthwise in place) + its input + output
    assert plan.peak_live_bytes == 28 * 28 * 192 + 2 * 28 * 28 * 32 == 200_704
    assert plan.peak_layer == "blocks.4.project"
    assert layer_plan(mbv2, mem).peak_live_bytes / plan.peak_live_bytes == pytest.approx(7.0)


@pytest.mark.parametrize(
    "memory",
    [
        MemoryConfig(inplace_depthwise=False),
        MemoryConfig(rule="layer_local"),
        MemoryConfig(arena_algorithm="greedy_by_breadth"),
        MemoryConfig(count_input=False, dtype_bytes=4),
    ],
    ids=["no-inplace", "layer-local", "greedy-by-breadth", "streamed-fp32"],
)
@pytest.mark.parametrize(("patch_blocks", "n_patches"), [(1, 2), (4, 3), (5, 4), (8, 2), (18, 7)])
def test_plans_pass_the_overlap_checker(mbv2, memory, patch_blocks, n_patches):
    plan = _checked(patch_plan(mbv2, memory, patch_blocks, n_patches))
    # the assembled stage output is one full buffer, alive from the first patch write to its last reader
    out = plan.tensor(plan.extra["patch_stage_output"])
    assert out.size > 0
    if patch_blocks == 5:
        assert out.size == 32 * 28 * 28 * memory.dtype_bytes
    patch_steps = [s.index for s in plan.steps if s.patch is not None]
    assert out.first_step <= patch_steps[-1] < out.last_step


def test_inplace_depthwise_inside_patches(mbv2):
    on = patch_plan(mbv2, MEM, 5, 4)
    off = patch_plan(mbv2, MemoryConfig(inplace_depthwise=False), 5, 4)
    dw = on.tensor("blocks.1.depthwise@1,1")
    assert dw.alias_of == "blocks.1.expand@1,1" and dw.buffer == "blocks.1.expand@1,1"
    assert off.tensor("blocks.1.depthwise@1,1").alias_of is None
    assert off.peak_live_bytes > on.peak_live_bytes


def test_auto_picks_the_lowest_peak_and_is_never_worse_than_layer():
    g = from_arch(mobilenetv2(0.35, 96))
    layer = layer_plan(g, MEM)
    auto = _checked(PatchScheduler(n_patches="auto", patch_blocks="auto", max_extra_macs=None).plan(g, MEM))
    assert auto.peak_live_bytes < layer.peak_live_bytes
    assert auto.extra["schedule"] and "no budget given" in auto.extra["schedule_reason"]
    # every explicit candidate is at least as high (ties: no fewer extra MACs)
    for pb in (2, 4, 5, 7):
        for n in (2, 3, 4):
            p = patch_plan(g, MEM, pb, n, placement=False)
            assert (p.peak_live_bytes, p.extra["extra_macs"]) >= (auto.peak_live_bytes, auto.extra["extra_macs"])


def test_auto_falls_back_to_layer_when_patching_cannot_help():
    # the peak is at the 1x1 head conv's output (8²·1280 B), in the global pool's block: no patch stage reaches it
    arch = Arch(16, (Block(8, 8, 3, 1, 1, 0), Block(8, 16, 3, 3, 1, 1)), stem_channels=8, head_channels=1280)
    g = from_arch(arch)
    layer = layer_plan(g, MEM)
    plan = _checked(PatchScheduler(n_patches="auto", patch_blocks="auto").plan(g, MEM))
    assert plan.extra["schedule"] == {} and "the layer plan has the lowest peak" in plan.extra["schedule_reason"]
    assert plan.peak_live_bytes == layer.peak_live_bytes and plan.arena_bytes == layer.arena_bytes
    assert plan.peak_layer == "pool"  # reading the head output, 8²·1280 B
    # an explicit grid is honoured even when it does not help
    explicit = patch_plan(g, MEM, 2, 2)
    assert explicit.peak_live_bytes >= layer.peak_live_bytes


def test_grid_finer_than_the_feature_map(mbv2):
    with pytest.raises(ConfigError, match=r"scheduler\.n_patches = 29.*between 1 and 28"):
        PatchScheduler(n_patches=29, patch_blocks=5).plan(mbv2, MEM)


@pytest.mark.parametrize("bad", [19, 40])
def test_patch_blocks_past_the_end(mbv2, bad):
    with pytest.raises(ConfigError, match=r"scheduler\.patch_blocks = \d+ .*between 1 and 18"):
        PatchScheduler(n_patches=2, patch_blocks=bad).plan(mbv2, MEM)


@pytest.mark.parametrize(
    ("option", "value"),
    [("n_patches", "four"), ("n_patches", 0), ("n_patches", 2.5), ("patch_blocks", True), ("patch_blocks", None)],
)
def test_bad_option_values(option, value):
    with pytest.raises(ConfigError, match=rf"scheduler\.{option}"):
        PatchScheduler(**{option: value})


def test_hydra_option_builds_a_scheduler(mbv2):
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["scheduler=patch", "scheduler.n_patches=auto"])
    sched = build_plugin(cfg, "scheduler")
    assert isinstance(sched, Scheduler) and sched.name == "patch"
    assert sched.n_patches == "auto" and sched.patch_blocks == "auto" and sched.max_extra_macs == 0.5


def test_auto_respects_max_extra_macs():
    g = from_arch(mobilenetv2(0.35, 96))
    free = PatchScheduler(n_patches="auto", patch_blocks="auto", max_extra_macs=None).plan(g, MEM)
    capped = _checked(PatchScheduler(n_patches="auto", patch_blocks="auto", max_extra_macs=0.05).plan(g, MEM))
    assert free.extra["extra_macs_ratio"] > 0.05  # the cap binds here
    assert capped.extra["extra_macs_ratio"] <= 0.05
    assert free.peak_live_bytes <= capped.peak_live_bytes < layer_plan(g, MEM).peak_live_bytes
