"""Backward receptive-field walk: the formula, exact coordinates at the border, MACs, bad grids."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyflow.errors import ConfigError, TinyflowError
from tinyflow.memory.receptive_field import Interval, Region, SpatialOp, chain, patch_geometry, split_axis, walk_back

# the depthwise/stem convs of MobileNetV2's stem + first 4 blocks (1x1 convs do not widen the field)
MBV2_STAGE = [(3, 2, 1), (3, 1, 1), (3, 2, 1), (3, 1, 1), (3, 2, 1)]


def test_mbv2_4x4_input_patch_is_75():
    g = patch_geometry(chain(MBV2_STAGE, 224), 4)
    assert g.ops[-1].out_hw == (28, 28)
    assert g.input_patch_hw == (75, 75)
    assert g.receptive_field_hw == (75, 75)
    assert g.buffer_hw["t4"] == (7, 7)


def test_formula_g_in():
    # g_in = (g_out - 1) * s + k, walked back layer by layer
    g = 7
    for k, s, _ in reversed(MBV2_STAGE):
        g = (g - 1) * s + k
    assert g == 75


def test_corner_patch_is_clipped_and_padded_only_at_border():
    g = patch_geometry(chain(MBV2_STAGE, 224), 4)
    corner = next(p for p in g.patches if (p.row, p.col) == (0, 0))
    inner = next(p for p in g.patches if (p.row, p.col) == (1, 2))
    # corner: output rows/cols [0, 7) need input [-1, 62) -> stored [0, 62), one row/col of zero padding
    # (smaller than 75: every layer's region is clipped at the border before walking further back)
    assert corner.unclipped["input"].as_tuple() == (-1, 62, -1, 62)
    assert corner.tensors["input"].as_tuple() == (0, 62, 0, 62)
    assert corner.input_padding(g.ops[0], "input") == (1, 0, 1, 0)
    # an interior patch holds real data on every side: no padding at its patch edges
    # rows [7, 14) -> 13, 12, 23, 22, 43 going back (start·s − p per layer); cols [14, 21) -> 27, 26, 51, 50, 99
    assert inner.tensors["input"].as_tuple() == (43, 43 + 75, 99, 99 + 75)
    for op in g.ops:
        assert inner.input_padding(op, op.inputs[0]) == (0, 0, 0, 0)


def test_macs_layerwise_and_extra():
    ops = chain(MBV2_STAGE, 224, macs_per_pixel=[10, 20, 30, 40, 50])
    g = patch_geometry(ops, 1)
    assert g.patch_stage_macs == g.patch_stage_macs_layerwise  # one patch: no overlap
    g4 = patch_geometry(ops, 4)
    assert g4.patch_stage_macs_layerwise == sum(op.macs for op in ops)
    assert g4.extra_macs > 0
    # the last op's patches tile its output exactly: no recompute there
    assert g4.per_op_macs["conv4"] == ops[-1].macs


def test_split_axis_sizes_differ_by_at_most_one():
    parts = split_axis(29, 4)
    assert [p.size for p in parts] == [7, 7, 7, 8]
    assert parts[0].start == 0 and parts[-1].stop == 29


def test_residual_dag_needs_hull():
    # x -> conv3x3 -> y ; add(x, y): x is needed over the conv's field and the add's own region
    hw = (9, 9)
    ops = [
        SpatialOp("dw", ("x",), "y", hw, hw, (3, 3), (1, 1), (1, 1)),
        SpatialOp("add", ("x", "y"), "z", hw, hw),
    ]
    need, raw = walk_back(ops, Region(Interval(3, 5), Interval(0, 2)), "x")
    assert need["x"].as_tuple() == (2, 6, 0, 3)
    assert raw["x"].as_tuple() == (2, 6, -1, 3)


def test_grid_finer_than_map_is_an_error():
    with pytest.raises(ConfigError, match=r"scheduler\.n_patches = 29.*between 1 and 28"):
        patch_geometry(chain(MBV2_STAGE, 224), 29)
    with pytest.raises(TinyflowError, match="n_patches"):
        patch_geometry(chain(MBV2_STAGE, 224), 0)


def _dependency_1d(layers, length, lo, hi):
    """Brute force: the input indices that output indices [lo, hi) of a 1-D conv chain depend on."""
    sizes = [length]
    for k, s, p in layers:
        sizes.append((sizes[-1] + 2 * p - k) // s + 1)
    wanted = set(range(lo, hi))
    for (k, s, p), n_in in zip(reversed(layers), reversed(sizes[:-1])):
        wanted = {o * s - p + t for o in wanted for t in range(k)}
        wanted = {i for i in wanted if 0 <= i < n_in}
    return min(wanted), max(wanted) + 1


@settings(max_examples=60, deadline=None)
@given(
    layers=st.lists(
        st.tuples(st.sampled_from([1, 3, 5, 7]), st.sampled_from([1, 2])).map(lambda ks: (ks[0], ks[1], ks[0] // 2)),
        min_size=1,
        max_size=5,
    ),
    resolution=st.integers(15, 61),
    n=st.integers(1, 4),
)
def test_walk_matches_brute_force(layers, resolution, n):
    ops = chain(layers, resolution)
    out = ops[-1].out_hw[0]
    if out < n:
        with pytest.raises(ConfigError):
            patch_geometry(ops, n)
        return
    g = patch_geometry(ops, n)
    for p in g.patches:
        r = p.tensors["input"]
        out_r = p.tensors[ops[-1].output]
        assert (r.h.start, r.h.stop) == _dependency_1d(layers, resolution, out_r.h.start, out_r.h.stop)
        assert (r.w.start, r.w.stop) == _dependency_1d(layers, resolution, out_r.w.start, out_r.w.stop)
    # the last op's patches tile its output exactly (earlier ops may skip rows a stride never reads)
    assert g.per_op_macs[ops[-1].name] == ops[-1].macs
