"""Fast costing of an MBConv `Arch` for search: MACs, params, flash and the layer-plan peak, without a graph.

It applies the same conventions as `from_arch` + `compute_lifetimes` (docs/design.md §6) in closed form per block,
and is tested to give identical numbers on random archs under every memory switch. Use it where thousands
of archs are scored (space optimisation, evolution); use the IR where a plan or a table is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinyflow.arch.genome import Arch
from tinyflow.contracts import MemoryConfig
from tinyflow.cost.flash import BIAS_BYTES, SCALE_BYTES
from tinyflow.memory.lifetimes import check_memory_config

_PER_CHANNEL = BIAS_BYTES + SCALE_BYTES
_DEFAULT_MEMORY = MemoryConfig()


@dataclass(frozen=True)
class ArchCost:
    """Costs of one arch under the `layer` scheduler. flash_bytes: the model only (no runtime overhead)."""

    macs: int
    params: int
    flash_bytes: int
    peak_live_bytes: int
    peak_layer: str


def _out(size: int, k: int, s: int) -> int:
    p = k // 2
    return (size + 2 * p - k) // s + 1


def arch_cost(arch: Arch, memory: MemoryConfig = _DEFAULT_MEMORY) -> ArchCost:
    """MACs, params, model flash and `peak_live_bytes` of `arch` run layer by layer (batch 1)."""
    if memory is not _DEFAULT_MEMORY:
        check_memory_config(memory)
    b = memory.dtype_bytes
    local = memory.rule == "layer_local"
    inplace = memory.inplace_depthwise
    r = arch.resolution
    h = _out(r, arch.stem_kernel, arch.stem_stride)
    c = arch.stem_channels
    k = arch.stem_kernel
    w = arch.in_channels * k * k * c
    macs = h * h * w
    params = w + c
    flash = w + c * _PER_CHANNEL
    x = h * h * c * b
    peak = (r * r * arch.in_channels * b if memory.count_input else 0) + x
    peak_name = "stem"

    for i, blk in enumerate(arch.blocks):
        cin, hid, cout, k, s = blk.in_channels, blk.hidden, blk.out_channels, blk.kernel, blk.stride
        res = blk.stride == 1 and cin == cout
        keep = 0 if (local or not res) else x  # the block input held for the residual add
        hw = h * h
        if blk.expand != 1:
            e = hw * hid * b
            ws = x + e
            if ws > peak:
                peak, peak_name = ws, f"blocks.{i}.expand"
            macs += hw * cin * hid
            w = cin * hid
            params += w + hid
            flash += w + hid * _PER_CHANNEL
            dw_in_place = inplace
            dw_keep = keep
        else:
            e = x
            dw_in_place = inplace and not res  # the input is read again by the add: it cannot be overwritten
            dw_keep = 0  # the dw input *is* the kept block input
        h = _out(h, k, s)
        hw = h * h
        d = hw * hid * b
        ws = (e if dw_in_place else e + d) + dw_keep
        if ws > peak:
            peak, peak_name = ws, f"blocks.{i}.depthwise"
        macs += hw * hid * k * k
        w = hid * k * k
        params += w + hid
        flash += w + hid * _PER_CHANNEL
        y = hw * cout * b
        ws = d + y + keep
        if ws > peak:
            peak, peak_name = ws, f"blocks.{i}.project"
        macs += hw * hid * cout
        w = hid * cout
        params += w + cout
        flash += w + cout * _PER_CHANNEL
        if res:
            ws = x + 2 * y
            if ws > peak:
                peak, peak_name = ws, f"blocks.{i}.add"
        x = y
        c = cout

    hw = h * h
    if arch.head_channels:
        hc = arch.head_channels
        ws = x + hw * hc * b
        if ws > peak:
            peak, peak_name = ws, "head"
        macs += hw * c * hc
        params += c * hc + hc
        flash += c * hc + hc * _PER_CHANNEL
        x, c = hw * hc * b, hc
    pooled = c * b
    if x + pooled > peak:
        peak, peak_name = x + pooled, "pool"
    if pooled > peak:
        peak, peak_name = pooled, "flatten"
    nc = arch.num_classes
    if pooled + nc * b > peak:
        peak, peak_name = pooled + nc * b, "classifier"
    macs += c * nc
    params += c * nc + nc
    flash += c * nc + nc * _PER_CHANNEL
    return ArchCost(macs, params, flash, peak, peak_name)
