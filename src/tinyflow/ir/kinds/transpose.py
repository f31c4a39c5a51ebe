"""The `transpose` op kind, all of it in one place: its IR shape, executor kernel, int8 lowering, oracle, C emission,
receptive-field rule (a barrier: it moves pixels across the map) and MACs (none: it only moves bytes).

A real transpose is a new tensor (a layout change on the network input is folded by the importers instead), e.g.
the NCHW -> NHWC transpose a TF-converted network runs before its flatten and classifier. The firmware stores a
rank-4 NCHW tensor as NHWC (`firmware.qmodel.hwc`), so the lowering turns the IR's permutation into one over the
stored axes (batch excluded); the C is a generic int8 gather over the output's stored order, its input strides
constant, and the oracle is the same permutation in NumPy. Values move unchanged: input and output share a scale
and zero point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tinyflow.ir.op_registry import OPKIND_MACS, LayerParts, OpParts, register_parts
from tinyflow.ir.ops import IRError, OpKind, Shape, register_op

if TYPE_CHECKING:
    from tinyflow.firmware.qmodel import QLayer
    from tinyflow.ir.graph import Node

STORED = {4: (0, 2, 3, 1)}  # rank -> the firmware's stored axis order of an IR tensor (NCHW -> NHWC)


@register_op
class Transpose(OpKind):
    """attrs: perm. A real transpose: a new tensor (a layout change on the network input is folded instead)."""

    name = "transpose"

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        perm = tuple(int(p) for p in node.attrs["perm"])
        if sorted(perm) != list(range(len(inputs[0]))):
            raise IRError(f"node '{node.name}' (transpose): perm {list(perm)} does not fit shape {list(inputs[0])}")
        return tuple(inputs[0][p] for p in perm)

    def macs(self, node: Node, inputs: list[Shape], out: Shape) -> int:
        return 0


def execute(node: Node, xs: list[Any], conv: Any, pads: tuple[int, int, int, int]) -> Any:
    """The executor kernel (PyTorch tensors; no torch import needed to permute one)."""
    return xs[0].permute(*node.attrs["perm"])


def stored_perm(perm: tuple[int, ...]) -> tuple[int, ...]:
    """The permutation of the firmware's stored axes, batch excluded, that an IR transpose by `perm` makes.

    Stored = IR.transpose(s) with s = `STORED[rank]`; out_stored = in_stored.transpose(q) with
    q[i] = s⁻¹[perm[s[i]]]. The batch axis must stay first."""
    s = STORED.get(len(perm))
    if s is None:
        raise ValueError(f"a rank-{len(perm)} transpose (the firmware transposes rank-4 maps)")
    inv = [s.index(j) for j in range(len(s))]
    q = tuple(inv[perm[s[i]]] for i in range(len(s)))
    if q[0] != 0:
        raise ValueError(f"perm {list(perm)} moves the batch axis")
    return tuple(a - 1 for a in q[1:])


def lower(ctx: Any, node: Node) -> QLayer:
    """The int8 layer: `ctx` is the lowering context (anything with `.graph`, or the IR graph itself), whose graph
    carries the quantization (`Graph.quant`) of the input and, when the file has its own, of the output."""
    from tinyflow.firmware.qmodel import QLayer, UnsupportedLayerError, hwc

    graph = getattr(ctx, "graph", ctx)
    what = f"node '{node.name}' (transpose)"
    in_shape = tuple(graph[node.inputs[0]].shape)
    try:
        perm = stored_perm(tuple(int(p) for p in node.attrs["perm"]))
    except ValueError as exc:
        raise UnsupportedLayerError(f"{what}: {exc}; the C generator has no kernel for it") from None
    q_in = graph.quant.get(node.inputs[0])
    if q_in is None:
        raise UnsupportedLayerError(f"{what}: its input '{node.inputs[0]}' carries no int8 quantization")
    q_out = graph.quant.get(node.name, q_in)
    if not (q_in.per_tensor and q_out.per_tensor) or q_in.scalar != q_out.scalar:
        raise UnsupportedLayerError(
            f"{what}: input quantization {q_in.to_dict()} differs from the output's {q_out.to_dict()}; the C "
            "transpose moves int8 values unchanged"
        )
    p = {"perm": perm, "in_dims": hwc(in_shape), "zp_in": q_in.scalar[1], "zp_out": q_out.scalar[1]}
    return QLayer(node.name, "transpose", list(node.inputs), [in_shape], tuple(node.shape), p)


def oracle(layer: QLayer, xs: list[np.ndarray]) -> np.ndarray:
    """The same permutation in NumPy over a batch of stored (N, H, W, C) tensors."""
    from tinyflow.firmware.qmodel import hwc

    x = xs[0].reshape(len(xs[0]), *layer.p["in_dims"])
    y = x.transpose(0, *(a + 1 for a in layer.p["perm"]))
    return np.ascontiguousarray(y).reshape(len(x), *hwc(layer.out_shape))


def emit(layer: QLayer, ident: str, views: Any, layer_plan: bool) -> str:
    """The C: a gather over the output in stored order, each input index from constant strides."""
    dims, perm = layer.p["in_dims"], layer.p["perm"]
    strides = [int(np.prod(dims[a + 1 :])) for a in range(len(dims))]
    src, dst = views.ins[0][0], views.out[0]
    loops, index = "", []
    for i, a in enumerate(perm):
        pad = "    " * (i + 1)
        loops += f"{pad}for (int32_t i{i} = 0; i{i} < {dims[a]}; i{i}++)\n"
        index.append(f"i{i} * {strides[a]}")
    body = "    " * (len(perm) + 1) + f"*y++ = x[{' + '.join(index)}];"
    return f"const int8_t *x = {src};\n    int8_t *y = {dst};\n{loops}{body}"


register_parts(
    "transpose",
    OpParts(
        executor=execute,
        lowering=lower,
        layers={"transpose": LayerParts(oracle, emit)},
        receptive_field="barrier",
        macs=OPKIND_MACS,
    ),
)
