"""Patch geometry by a backward receptive-field walk (MCUNetV2 patch-based inference).

The patch stage is a small DAG of spatial ops (convs, element-wise ops, adds). Its output is split into an
`n × n` grid; for every patch we walk the ops backwards from the patch's output region: an op with kernel k,
stride s, dilation d and begin-padding p whose output rows [a, b) are wanted reads input rows
[a·s − p, (b − 1)·s − p + (k − 1)·d + 1), i.e. g_in = (g_out − 1)·s + k rows. A tensor read by several ops
needs the hull of what they read. Rows outside the feature map are the zero padding of the layer-wise network
(the image border); they are never stored, and a patch edge inside the map is never padded — the rows there
are real data recomputed by the neighbouring patch (the overlap, whose MACs are reported as extra).

Pure Python, no torch: the schedulers cost patches with it and the executors run patches from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tinyflow.errors import ConfigError
from tinyflow.ir.graph import Graph, Node
from tinyflow.ir.op_registry import rf_rule
from tinyflow.ir.ops import get_op


@dataclass(frozen=True)
class Interval:
    """Half-open range of rows (or columns) [start, stop) in a feature map's own coordinates."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return max(0, self.stop - self.start)

    def hull(self, other: Interval) -> Interval:
        return Interval(min(self.start, other.start), max(self.stop, other.stop))

    def clip(self, length: int) -> Interval:
        return Interval(max(0, self.start), min(length, self.stop))


@dataclass(frozen=True)
class Region:
    """A rectangle of a feature map: rows `h`, columns `w` (half-open)."""

    h: Interval
    w: Interval

    @property
    def hw(self) -> tuple[int, int]:
        return (self.h.size, self.w.size)

    @property
    def area(self) -> int:
        return self.h.size * self.w.size

    def hull(self, other: Region) -> Region:
        return Region(self.h.hull(other.h), self.w.hull(other.w))

    def clip(self, hw: tuple[int, int]) -> Region:
        return Region(self.h.clip(hw[0]), self.w.clip(hw[1]))

    def as_tuple(self) -> tuple[int, int, int, int]:
        """(h_start, h_stop, w_start, w_stop)."""
        return (self.h.start, self.h.stop, self.w.start, self.w.stop)


@dataclass(frozen=True)
class SpatialOp:
    """One op of the patch stage as the walk sees it.

    `inputs`/`output` name tensors; `in_hw`/`out_hw` are the full (layer-wise) spatial sizes. Element-wise ops
    (activation, add, BatchNorm) have kernel 1, stride 1, padding 0. `macs` is the op's MACs over its whole
    output; a patch costs `macs · (patch output area / full output area)` (MACs are uniform per output pixel).
    """

    name: str
    inputs: tuple[str, ...]
    output: str
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)  # begin padding (top, left); the end padding only shapes out_hw
    dilation: tuple[int, int] = (1, 1)
    macs: int = 0

    def input_interval(self, out: Interval, axis: int) -> Interval:
        """Unclipped input rows/cols that output range `out` reads along `axis` (0 = h, 1 = w)."""
        k, s, p, d = self.kernel[axis], self.stride[axis], self.padding[axis], self.dilation[axis]
        return Interval(out.start * s - p, (out.stop - 1) * s - p + (k - 1) * d + 1)

    def input_region(self, out: Region) -> Region:
        return Region(self.input_interval(out.h, 0), self.input_interval(out.w, 1))


@dataclass
class PatchRegions:
    """The regions one patch needs: per tensor, clipped to the map (what is computed and stored)."""

    row: int
    col: int
    tensors: dict[str, Region]  # clipped region of every tensor of the stage (its input included)
    unclipped: dict[str, Region]  # the same before clipping: its excess over the map is border padding

    def input_padding(self, op: SpatialOp, tensor: str) -> tuple[int, int, int, int]:
        """Zero padding (top, bottom, left, right) op needs around `tensor`'s region in this patch.

        Non-zero only where the wanted rows fall outside the feature map — the image border.
        """
        want = op.input_region(self.tensors[op.output])
        hw = op.in_hw
        return (max(0, -want.h.start), max(0, want.h.stop - hw[0]), max(0, -want.w.start), max(0, want.w.stop - hw[1]))


@dataclass
class PatchGeometry:
    """Every patch's regions, the per-tensor buffer sizes, and the MACs of patch vs layer execution."""

    n_patches: int
    ops: tuple[SpatialOp, ...]
    stage_input: str
    stage_output: str
    patches: list[PatchRegions]
    buffer_hw: dict[str, tuple[int, int]]  # per tensor: the largest region over patches (one buffer, reused)
    input_patch_hw: tuple[int, int]  # the largest input region a patch holds (clipped at the image border)
    receptive_field_hw: tuple[int, int]  # g_in of the largest patch before clipping (the formula's value)
    patch_stage_macs: int
    patch_stage_macs_layerwise: int
    per_op_macs: dict[str, int] = field(default_factory=dict)  # patch execution, summed over patches

    @property
    def extra_macs(self) -> int:
        return self.patch_stage_macs - self.patch_stage_macs_layerwise


def split_axis(length: int, n: int) -> list[Interval]:
    """Split [0, length) into n contiguous parts whose sizes differ by at most one."""
    bounds = [(i * length) // n for i in range(n + 1)]
    return [Interval(bounds[i], bounds[i + 1]) for i in range(n)]


def _topo_check(ops: Sequence[SpatialOp], stage_input: str) -> None:
    known = {stage_input}
    for op in ops:
        for t in op.inputs:
            if t not in known:
                raise ConfigError(
                    f"patch stage: op '{op.name}' reads tensor '{t}' that is neither the stage input nor produced "
                    "by an earlier op of the stage; the patch stage must be a single-input DAG in topological order"
                )
        known.add(op.output)


def walk_back(
    ops: Sequence[SpatialOp], out_region: Region, stage_input: str
) -> tuple[dict[str, Region], dict[str, Region]]:
    """Regions each tensor of the stage must hold so that the last op's output covers `out_region`.

    Returns (clipped, unclipped) per tensor. `ops` is in topological order; the last op writes the stage output.
    """
    need: dict[str, Region] = {ops[-1].output: out_region}
    raw: dict[str, Region] = {ops[-1].output: out_region}
    hw_of: dict[str, tuple[int, int]] = {stage_input: ops[0].in_hw}
    for op in ops:
        hw_of[op.output] = op.out_hw
    for op in reversed(ops):
        if op.output not in need:
            continue  # an op whose output nobody in the patch stage reads (dead in this stage)
        want = op.input_region(need[op.output])
        for t in op.inputs:
            raw[t] = raw[t].hull(want) if t in raw else want
            clipped = want.clip(hw_of[t])
            need[t] = need[t].hull(clipped) if t in need else clipped
    return need, raw


def patch_geometry(ops: Sequence[SpatialOp], n_patches: int, stage_input: str | None = None) -> PatchGeometry:
    """Patch geometry for an `n_patches × n_patches` grid over the output of `ops` (the patch stage).

    Raises ConfigError when the grid is finer than the stage's output feature map.
    """
    ops = tuple(ops)
    if not ops:
        raise ConfigError("patch stage: it has no ops; scheduler.patch_blocks must be at least 1")
    stage_input = stage_input or ops[0].inputs[0]
    _topo_check(ops, stage_input)
    out_hw = ops[-1].out_hw
    if not isinstance(n_patches, int) or n_patches < 1 or n_patches > min(out_hw):
        raise ConfigError(
            f"scheduler.n_patches = {n_patches}: a {n_patches}×{n_patches} patch grid is finer than the patch stage's "
            f"output feature map {out_hw[0]}×{out_hw[1]}; choose n_patches between 1 and {min(out_hw)} "
            "(or fewer scheduler.patch_blocks, whose output map is larger)"
        )
    rows, cols = split_axis(out_hw[0], n_patches), split_axis(out_hw[1], n_patches)
    patches: list[PatchRegions] = []
    buffer_hw: dict[str, tuple[int, int]] = {}
    per_op_macs = {op.name: 0 for op in ops}
    rf = (0, 0)
    for i, rh in enumerate(rows):
        for j, cw in enumerate(cols):
            clipped, raw = walk_back(ops, Region(rh, cw), stage_input)
            patches.append(PatchRegions(i, j, clipped, raw))
            for t, r in clipped.items():
                old = buffer_hw.get(t, (0, 0))
                buffer_hw[t] = (max(old[0], r.h.size), max(old[1], r.w.size))
            rin = raw[stage_input]
            rf = (max(rf[0], rin.h.size), max(rf[1], rin.w.size))
            for op in ops:
                if op.output in clipped:
                    per_op_macs[op.name] += _scaled_macs(op, clipped[op.output].area)
    layerwise = sum(op.macs for op in ops)
    return PatchGeometry(
        n_patches=n_patches,
        ops=ops,
        stage_input=stage_input,
        stage_output=ops[-1].output,
        patches=patches,
        buffer_hw=buffer_hw,
        input_patch_hw=buffer_hw[stage_input],
        receptive_field_hw=rf,
        patch_stage_macs=sum(per_op_macs.values()),
        patch_stage_macs_layerwise=layerwise,
        per_op_macs=per_op_macs,
    )


def _scaled_macs(op: SpatialOp, area: int) -> int:
    full = op.out_hw[0] * op.out_hw[1]
    # exact when macs is a multiple of the output area (always, for convs: cout·cin/g·k² per pixel)
    return (op.macs * area) // full if full else 0


def op_macs(op: SpatialOp, region: Region) -> int:
    """MACs of computing `region` of `op`'s output."""
    return _scaled_macs(op, region.area)


def chain(
    layers: Iterable[tuple[int, int, int]],
    resolution: int | tuple[int, int],
    macs_per_pixel: Iterable[int] | None = None,
) -> list[SpatialOp]:
    """A plain chain of convs from (kernel, stride, padding) triples — handy for tests and quick geometry."""
    hw = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    ops: list[SpatialOp] = []
    mpp = list(macs_per_pixel) if macs_per_pixel is not None else None
    prev = "input"
    for i, (k, s, p) in enumerate(layers):
        out = ((hw[0] + 2 * p - k) // s + 1, (hw[1] + 2 * p - k) // s + 1)
        macs = (mpp[i] if mpp else 1) * out[0] * out[1]
        ops.append(SpatialOp(f"conv{i}", (prev,), f"t{i}", hw, out, (k, k), (s, s), (p, p), macs=macs))
        prev, hw = f"t{i}", out
    return ops


# ---------------------------------------------------------------- from the network IR
def _patchable(graph: Graph, node: Node) -> bool:
    """Whether `node`'s output pixels depend only on a local window of same-layout NCHW inputs: its op kind's
    receptive-field rule (`tinyflow.ir.op_registry`) is `windowed`, or `elementwise` over same-sized maps."""
    rule = rf_rule(node.op)
    if rule == "windowed":
        return True
    if rule == "elementwise":
        ins = [graph[i].shape for i in node.inputs]
        return len(node.shape) == 4 and all(len(s) == 4 and s[2:] == node.shape[2:] for s in ins)
    return False


def max_patch_blocks(graph: Graph) -> int:
    """The largest `patch_blocks` whose blocks (stem = block 0) hold only ops that can run patch by patch."""
    limit = graph.n_blocks + 1
    for node in graph:
        if node.op != "input" and not _patchable(graph, node):
            limit = min(limit, node.block)
    return limit


def spatial_op(graph: Graph, node: Node) -> SpatialOp:
    """The walk's view of one IR node."""
    in_hw = tuple(graph[node.inputs[0]].shape[2:4])
    out_hw = tuple(node.shape[2:4])
    if rf_rule(node.op) == "windowed":
        win = get_op(node.op).window(node)
        pt, pl, _, _ = win.padding
        return SpatialOp(
            node.name,
            node.inputs,
            node.name,
            in_hw,
            out_hw,
            win.kernel,
            win.stride,
            (pt, pl),
            win.dilation,
            graph.node_macs(node),
        )
    return SpatialOp(node.name, node.inputs, node.name, in_hw, out_hw, macs=graph.node_macs(node))


def patch_stage(graph: Graph, patch_blocks: int) -> tuple[list[SpatialOp], str]:
    """The ops of the first `patch_blocks` blocks (stem = block 0) as SpatialOps, and the stage's input name.

    Raises ConfigError naming `scheduler.patch_blocks` and its valid range when the stage runs past what can be
    patched, or does not end in a single tensor that the rest of the network reads.
    """
    top = max_patch_blocks(graph)
    if top < 1:  # not even the stem can run patch by patch: no range to offer
        first = next(n for n in graph.topological_order() if n.op != "input" and not _patchable(graph, n))
        raise ConfigError(
            f"scheduler.patch_blocks = {patch_blocks!r}: no block of the network '{graph.name}' can run patch by "
            f"patch — its stem (block 0) already holds node '{first.name}' ({first.op}), which is not a windowed or "
            "element-wise op on feature maps; use scheduler=layer for this network"
        )
    if not isinstance(patch_blocks, int) or isinstance(patch_blocks, bool) or not 1 <= patch_blocks <= top:
        raise ConfigError(
            f"scheduler.patch_blocks = {patch_blocks!r} is outside the network '{graph.name}': it has blocks "
            f"0..{graph.n_blocks} (the stem is block 0), and only the first {top} can run patch by patch "
            f"(a global pool, flatten or linear cannot); choose patch_blocks between 1 and {top}, or 'auto'"
        )
    nodes = [n for n in graph.topological_order() if n.op != "input" and n.block < patch_blocks]
    inside = {n.name for n in nodes}
    outside_inputs = {i for n in nodes for i in n.inputs if i not in inside}
    if len(outside_inputs) != 1 or graph[next(iter(outside_inputs))].op != "input":
        raise ConfigError(
            f"scheduler.patch_blocks = {patch_blocks}: the patch stage must read only the network input, but it reads "
            f"{sorted(outside_inputs)}; choose a different patch_blocks"
        )
    read_later = {i for n in graph if n.name not in inside for i in n.inputs if i in inside}
    read_later |= {o for o in graph.outputs if o in inside}
    if len(read_later) != 1:
        raise ConfigError(
            f"scheduler.patch_blocks = {patch_blocks}: the patch stage must end in one tensor that the rest of the "
            f"network reads, but {sorted(read_later)} leave it; choose a patch_blocks at a block boundary"
        )
    (out_name,) = read_later
    ops = [spatial_op(graph, n) for n in nodes]
    # the stage output must be the last op: drop nothing, but reorder is not needed in topological order
    if ops[-1].output != out_name:
        raise ConfigError(
            f"scheduler.patch_blocks = {patch_blocks}: the stage's output '{out_name}' is not its last op; "
            "choose a patch_blocks at a block boundary"
        )
    return ops, next(iter(outside_inputs))


def graph_patch_geometry(graph: Graph, patch_blocks: int, n_patches: int) -> PatchGeometry:
    """Patch geometry of a network IR: `n_patches × n_patches` over the output of its first `patch_blocks`."""
    ops, stage_input = patch_stage(graph, patch_blocks)
    return patch_geometry(ops, n_patches, stage_input)
