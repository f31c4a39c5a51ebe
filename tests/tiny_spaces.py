"""Small search spaces that the supernet, OFA and RNNPool-stem tests build networks from in milliseconds."""

from __future__ import annotations

from tinyflow.arch.space import MBConvSpace, StageSpec
from tinyflow_plugins.search_spaces import McunetSpace


def small_space(**kw) -> MBConvSpace:
    """Resolution 24 -> stem 12x12; stages start at 12 (stage 1), 6 (stage 2) and 3 (stage 3), then a tail block."""
    base = dict(
        width_mult=0.5,
        resolution=24,
        in_channels=1,
        num_classes=10,
        stages=(StageSpec(24, 2), StageSpec(40, 2), StageSpec(48, 1)),
        tail_channels=(64,),
        head_channels=64,
    )
    base.update(kw)
    return MBConvSpace(**base)


def tiny_space(**kw) -> McunetSpace:
    """Resolution 16 -> stem 8x8; stage 1 starts at 8, stage 2 at 4 (where a 4x4 / stride 2 RNNPool resumes)."""
    base = dict(
        width_mult=0.25,
        resolution=16,
        in_channels=1,
        num_classes=10,
        stem_channels=16,
        first_block_channels=16,
        stages=[{"width": 16, "stride": 2}, {"width": 24, "stride": 2}],
        tail_channels=[],
        head_channels=0,
        kernel_choices=[3, 5],
        expand_choices=[2, 3],
        depth_choices=[1, 2],
    )
    base.update(kw)
    return McunetSpace(**base)
