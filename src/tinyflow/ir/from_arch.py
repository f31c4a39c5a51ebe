"""Build the IR of an MBConv `Arch` (the same network as `tinyflow.nn.static.StaticNet`, without torch).

Node names follow StaticNet's module paths (`stem`, `blocks.3.expand`, `blocks.3.depthwise`,
`blocks.3.project`, `blocks.3.add`, `head`, `pool`, `flatten`, `classifier`); BatchNorm is folded into its conv
and ReLU6 fused (`attrs["act"]`), as an int8 deployment runs them.
"""

from __future__ import annotations

from collections.abc import Sequence

from tinyflow.arch.genome import Arch, Block
from tinyflow.ir.graph import Graph


def _conv(k: int, s: int, cout: int, groups: int, act: str | None) -> dict:
    p = k // 2
    return {
        "out_channels": cout,
        "kernel": (k, k),
        "stride": (s, s),
        "padding": (p, p, p, p),
        "groups": groups,
        "act": act,
    }


def _cbn(prefix: str) -> dict[str, str]:
    return {"weight": f"{prefix}.0.weight", "bn": f"{prefix}.1"}


def from_arch(arch: Arch, batch: int = 1) -> Graph:
    """The IR of `arch` at its resolution: stem (block 0), MBConv blocks (1..N), head/pool/classifier (N+1)."""
    g = Graph(arch.name)
    g.meta["arch"] = arch
    r = arch.resolution
    g.add("input", "input", (), {"shape": (batch, arch.in_channels, r, r)}, block=0)
    g.add(
        "stem",
        "conv2d",
        ("input",),
        _conv(arch.stem_kernel, arch.stem_stride, arch.stem_channels, 1, "relu6"),
        block=0,
        weights=_cbn("stem"),
    )
    x = add_mbconv_blocks(g, arch.blocks, "stem", first_index=0)
    add_classifier_tail(g, arch, x)
    return g


def add_mbconv_blocks(g: Graph, blocks: Sequence[Block], x: str, first_index: int) -> str:
    """Append MBConv blocks reading `x`, named `blocks.{first_index + i}.*` (StaticNet's paths) and numbered
    `first_index + i + 1`; returns the name of the last block's output."""
    for i, b in enumerate(blocks):
        idx = first_index + i
        blk, p, block_in = idx + 1, f"blocks.{idx}", x
        if b.expand != 1:
            g.add(f"{p}.expand", "conv2d", (x,), _conv(1, 1, b.hidden, 1, "relu6"), blk, _cbn(f"{p}.expand"))
            x = f"{p}.expand"
        dw = _conv(b.kernel, b.stride, b.hidden, b.hidden, "relu6")
        g.add(f"{p}.depthwise", "conv2d", (x,), dw, blk, _cbn(f"{p}.depthwise"))
        pw = _conv(1, 1, b.out_channels, 1, None)
        g.add(f"{p}.project", "conv2d", (f"{p}.depthwise",), pw, blk, _cbn(f"{p}.project"))
        x = f"{p}.project"
        if b.residual:
            g.add(f"{p}.add", "add", (block_in, x), {}, blk)
            x = f"{p}.add"
    return x


def add_classifier_tail(g: Graph, arch: Arch, x: str) -> None:
    """Append the optional head conv, global pool, flatten and classifier (block N+1) and mark the output."""
    tail = len(arch.blocks) + 1
    if arch.head_channels:
        g.add("head", "conv2d", (x,), _conv(1, 1, arch.head_channels, 1, "relu6"), tail, _cbn("head"))
        x = "head"
    g.add("pool", "global_avgpool", (x,), {}, tail)
    g.add("flatten", "flatten", ("pool",), {"axis": 1}, tail)
    g.add(
        "classifier",
        "linear",
        ("flatten",),
        {"out_features": arch.num_classes, "act": None},
        tail,
        {"weight": "classifier.weight", "bias": "classifier.bias"},
    )
    g.set_outputs(["classifier"])
