"""The `rnnpool` op kind of the IR and the IR of an RNNPool network (pure Python, no torch).

Importing this module registers the op kind (`tinyflow.ir` imports it, so any graph can hold `rnnpool` nodes).

Exact costs of one `rnnpool` node (f input channels, r×c patches, hidden h1/h2, g = 1 gate matrix for FastGRNN
and 3 for GRU; MACs count the matrix products, element-wise gating is not a MAC):
- per patch, RNN1 over r rows of c steps and c columns of r steps: 2·r·c·g·(f·h1 + h1²);
  RNN2 over the row and column summaries, both directions: 2·(r + c)·g·(h1·h2 + h2²);
- parameters: weights g·(f·h1 + h1² + h1·h2 + h2²); biases 2·(h1 + h2) for FastGRNN (+ ζ, ν per cell) or
  6·(h1 + h2) for GRU;
- per-patch memory (elements): the patch r·c·f, and scratch (r + c)·h1 for the row/column summaries plus
  (2·g + 1)·max(h1, h2) for one step's input products, recurrent products and previous state. RNN2's final
  states are written straight into the pooled output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyflow.ir.from_arch import _cbn, _conv, add_classifier_tail, add_mbconv_blocks
from tinyflow.ir.graph import Graph
from tinyflow.ir.ops import IRError, OpKind, Shape, register_op

if TYPE_CHECKING:
    from tinyflow.arch.rnnpool import RNNPoolArch
    from tinyflow.ir.graph import Node

GATES = {"fastgrnn": 1, "gru": 3}


def _gates(node: Node) -> int:
    cell = node.attrs.get("cell", "fastgrnn")
    if cell not in GATES:
        raise IRError(f"node '{node.name}' (rnnpool): cell '{cell}' is not one of {sorted(GATES)}")
    return GATES[cell]


@register_op
class RNNPoolOp(OpKind):
    """attrs: hidden1, hidden2, patch (r, c), stride (sr, sc), padding (pr, pc) per side, cell.
    (N, f, H, W) -> (N, 4·hidden2, (H + 2pr − r)//sr + 1, (W + 2pc − c)//sc + 1)."""

    name = "rnnpool"

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        x = inputs[0]
        if len(x) != 4:
            raise IRError(f"node '{node.name}' (rnnpool): expects a rank-4 input, got shape {list(x)}")
        a = node.attrs
        (r, c), (sr, sc), (pr, pc) = a["patch"], a["stride"], a.get("padding", (0, 0))
        if x[2] + 2 * pr < r or x[3] + 2 * pc < c:
            raise IRError(
                f"node '{node.name}' (rnnpool): a {x[2]}x{x[3]} input (padding {pr},{pc}) is smaller than one "
                f"{r}x{c} patch"
            )
        return (x[0], 4 * a["hidden2"], (x[2] + 2 * pr - r) // sr + 1, (x[3] + 2 * pc - c) // sc + 1)

    @staticmethod
    def patch_macs(node: Node, in_channels: int) -> int:
        a = node.attrs
        g, (r, c), h1, h2 = _gates(node), a["patch"], a["hidden1"], a["hidden2"]
        return 2 * r * c * g * (in_channels * h1 + h1 * h1) + 2 * (r + c) * g * (h1 * h2 + h2 * h2)

    def macs(self, node: Node, inputs: list[Shape], out: Shape) -> int:
        return out[0] * out[2] * out[3] * self.patch_macs(node, inputs[0][1])

    def params(self, node: Node, inputs: list[Shape]) -> tuple[int, int]:
        a = node.attrs
        g, f, h1, h2 = _gates(node), inputs[0][1], a["hidden1"], a["hidden2"]
        weights = g * (f * h1 + h1 * h1 + h1 * h2 + h2 * h2)
        bias = 2 * (h1 + h2) + 4 if g == 1 else 6 * (h1 + h2)
        return weights, bias

    def out_channels(self, node: Node, inputs: list[Shape], out: Shape) -> int:
        # one quantization scale per output row of each cell's gate matrices
        return _gates(node) * (node.attrs["hidden1"] + node.attrs["hidden2"])

    @staticmethod
    def scratch_elems(node: Node) -> int:
        a = node.attrs
        (r, c), h1, h2 = a["patch"], a["hidden1"], a["hidden2"]
        return (r + c) * h1 + (2 * _gates(node) + 1) * max(h1, h2)


def rnnpool_graph(rarch: RNNPoolArch, batch: int = 1) -> Graph:
    """The IR of `RNNPoolNet(rarch)`: input, stem and rnnpool (block 0), the kept blocks under their original
    names and block numbers (`blocks.{cut}` … , blocks cut+1 …), head/pool/classifier.

    Node names are RNNPoolNet's parameter names (which keep StaticNet's); BN folded and ReLU6 fused as in
    `from_arch`.
    """
    base = rarch.base
    g = Graph(rarch.name)
    g.meta["arch"] = base
    g.meta["rnnpool_arch"] = rarch
    res = base.resolution
    g.add("input", "input", (), {"shape": (batch, base.in_channels, res, res)}, block=0)
    g.add(
        "stem",
        "conv2d",
        ("input",),
        _conv(base.stem_kernel, base.stem_stride, rarch.stem_channels, 1, "relu6"),
        0,
        _cbn("stem"),
    )
    g.add(
        "rnnpool",
        "rnnpool",
        ("stem",),
        {
            "hidden1": rarch.hidden1,
            "hidden2": rarch.hidden2,
            "patch": tuple(rarch.patch),
            "stride": tuple(rarch.stride),
            "padding": tuple(rarch.padding),
            "cell": rarch.cell,
        },
        0,
        {"rnn1": "rnnpool.rnn1", "rnn2": "rnnpool.rnn2"},
    )
    x = add_mbconv_blocks(g, rarch.blocks, "rnnpool", first_index=rarch.cut)
    add_classifier_tail(g, base, x)
    return g
