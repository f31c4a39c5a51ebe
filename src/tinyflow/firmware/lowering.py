"""Per-op lowering: one IR node to one integer layer (`QLayer`), read only from the graph.

Each `lower_<op>(ctx, node)` takes the node's attributes, the quantization the importer recorded
(`graph.quant`: activations by producing node, weights by name) and the stored integers (`graph.constants`: int8
weights, OIHW for convs, int32 biases), and returns the layer the oracle and the C generator run. Nothing here
opens a model file, so a `.tflite` and its `.onnx` twin lower alike. An op kind names its function in the op-kind
registry (`tinyflow.ir.kinds`), and `lower` dispatches through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyflow.firmware.fixedpoint import quantize_multiplier
from tinyflow.firmware.qmodel import (
    ADD_LEFT_SHIFT,
    SOFTMAX_BITS,
    SUPPORTED,
    QLayer,
    UnsupportedLayerError,
    fold,
)
from tinyflow.ir.graph import Graph, Node
from tinyflow.ir.onnx_constants import bias_name
from tinyflow.ir.ops import IRError

_VIEWS = ("flatten", "reshape")


@dataclass
class LoweringContext:
    """The graph being lowered, its consumers, and lookups of its quantization and constants."""

    graph: Graph
    consumers: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, graph: Graph) -> LoweringContext:
        return cls(graph, graph.consumers())

    @property
    def label(self) -> str:
        m = self.graph.meta
        return str(m.get("onnx_path") or m.get("tflite_path") or f"graph '{self.graph.name}'")

    def what(self, node: Node) -> str:
        return f"node '{node.name}' ({node.op})"

    def act_q(self, tensor: str, what: str) -> tuple[float, int]:
        """(scale, zp) of an int8 activation; a view without its own quantization has its input's."""
        name = tensor
        while name not in self.graph.quant and self.graph[name].op in _VIEWS:
            name = self.graph[name].inputs[0]
        q = self.graph.quant.get(name)
        if q is None:
            raise UnsupportedLayerError(
                f"{self.label}: {what} reads or writes '{tensor}', which is not quantized (no scale and zero point "
                "in the IR); the C generator needs a fully quantized int8 model (tinyflow's quantize stage writes "
                "one, or give an int8 .tflite)."
            )
        if q.dtype != "int8":
            raise UnsupportedLayerError(
                f"{self.label}: tensor '{tensor}' is quantized to {q.dtype}; the C generator runs int8 activations "
                "only. Quantize with quantize.activation_type=int8."
            )
        if not q.per_tensor:
            raise UnsupportedLayerError(f"{self.label}: {what}: activation '{tensor}' is quantized per channel")
        return q.scalar

    def in_q(self, node: Node, index: int = 0) -> tuple[float, int]:
        return self.act_q(node.inputs[index], self.what(node))

    def out_q(self, node: Node) -> tuple[float, int]:
        return self.act_q(node.name, self.what(node))

    def weight(self, name: str, what: str) -> tuple[np.ndarray, np.ndarray]:
        """The int8 weight and its per-output-channel scales (zero points must be 0)."""
        w = self.graph.constants.get(name)
        q = self.graph.quant.get(name)
        if w is None or q is None or np.asarray(w).dtype != np.int8:
            raise UnsupportedLayerError(
                f"{self.label}: {what}: weight '{name}' is not int8 with a scale; quantize the model with "
                "per-channel int8 weights (quantize.per_channel=true)."
            )
        if np.any(q.zero_points() != 0):
            raise UnsupportedLayerError(f"{self.label}: {what}: weight '{name}' has a non-zero zero point")
        return np.asarray(w), q.scales()

    def bias(self, node: Node, cout: int, s_in: float, s_w: np.ndarray) -> np.ndarray:
        """The int32 bias at s_in·s_w (a float one quantized to it; `onnx_constants.bias_name`); zeros without one."""
        name = bias_name(node)
        if name not in self.graph.constants:
            return np.zeros(cout, np.int64)
        b = np.asarray(self.graph.constants[name]).reshape(-1)
        return b.astype(np.int64) if b.dtype == np.int32 else np.rint(b / (s_in * s_w)).astype(np.int64)


def act_bounds(node: Node, scale: float, zp: int) -> tuple[int, int]:
    """The int8 range of the node's fused activation (relu, relu6, clip) at the output's quantization."""
    fn = node.attrs.get("act")
    lo, hi = -128, 127
    if fn is None:
        return lo, hi
    params = node.attrs.get("act_params") or {}
    if fn == "relu":
        fmin, fmax = 0.0, None
    elif fn == "relu6":
        fmin, fmax = 0.0, 6.0
    elif fn == "clip":
        fmin, fmax = params.get("min"), params.get("max")
    else:
        raise UnsupportedLayerError(
            f"node '{node.name}': fused activation '{fn}' has no int8 kernel in the C generator (relu, relu6, clip)"
        )
    if fmin is not None:
        lo = max(lo, zp + round(fmin / scale))
    if fmax is not None:
        hi = min(hi, zp + round(fmax / scale))
    return int(lo), int(hi)


def requant(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, shift) arrays of real multipliers."""
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(real, np.float64).reshape(-1)]
    return np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32)


def _weighted(ctx: LoweringContext, node: Node) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The constants a conv and a linear share: zero points, requantization, activation range; weight; bias."""
    what = ctx.what(node)
    s_in, zp_in = ctx.in_q(node)
    s_out, zp_out = ctx.out_q(node)
    w, s_w = ctx.weight(node.weights["weight"], what)
    if any(k.startswith("bn_") for k in node.weights):
        raise UnsupportedLayerError(f"{what}: an unfolded BatchNorm; export with BatchNorm folded into the conv")
    cout = node.attrs.get("out_channels", node.attrs.get("out_features"))
    s_w = np.broadcast_to(s_w, (cout,)).astype(np.float64)
    bias = ctx.bias(node, cout, s_in, s_w)
    m, sh = requant(np.float64(s_in) * s_w / np.float64(s_out))
    lo, hi = act_bounds(node, s_out, zp_out)
    p = {"zp_in": zp_in, "zp_out": zp_out, "mult": m, "shift": sh, "act_min": lo, "act_max": hi}
    return p, w, bias


def _flatten_order(ctx: LoweringContext, node: Node, w: np.ndarray) -> np.ndarray:
    """A linear layer reading a flattened C×H×W map: reorder its columns to the NHWC element order."""
    g = ctx.graph
    src = g[node.inputs[0]]
    nhwc = False
    while src.op in _VIEWS:
        nhwc = nhwc or bool(src.attrs.get("nhwc"))
        src = g[src.inputs[0]]
    if len(src.shape) == 4 and src.shape[2] * src.shape[3] > 1 and not nhwc:
        c, h, wd = src.shape[1:]
        return w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    return w


def lower_linear(ctx: LoweringContext, node: Node) -> QLayer:
    p, w, bias = _weighted(ctx, node)
    wt = w if node.attrs.get("weight_transposed", False) else w.T  # (out, in)
    wt = _flatten_order(ctx, node, wt)
    p.update(weight=np.ascontiguousarray(wt, np.int8), bias=fold(bias, wt, p["zp_in"]))
    return QLayer(node.name, "linear", list(node.inputs), [ctx.graph[node.inputs[0]].shape], node.shape, p)


def lower_conv2d(ctx: LoweringContext, node: Node) -> QLayer:
    """A depthwise, pointwise (1×1, stride 1, no padding) or im2col convolution; weights OIHW in the graph."""
    p, w, bias = _weighted(ctx, node)
    what, a = ctx.what(node), node.attrs
    in_shape = ctx.graph[node.inputs[0]].shape
    if tuple(a.get("dilation", (1, 1))) != (1, 1):
        raise UnsupportedLayerError(f"{what}: dilated convolution has no kernel in the C generator ({SUPPORTED})")
    kh, kw = a["kernel"]
    geo = {"kernel": (kh, kw), "stride": tuple(a.get("stride", (1, 1))), "pad": tuple(a.get("padding", (0,) * 4))}
    cin, cout, groups = in_shape[1], w.shape[0], a.get("groups", 1)
    zp_in = p["zp_in"]
    if groups == cin == cout and cin > 1:
        if kh * kw > 49:
            raise UnsupportedLayerError(f"{what}: a {kh}x{kw} depthwise kernel; the C kernel takes up to 7x7")
        wd = np.ascontiguousarray(w.reshape(cout, kh * kw), np.int8)  # [c][ky*kw+kx]
        p.update(geo, weight=wd, bias=fold(bias, wd, zp_in))
        return QLayer(node.name, "depthwise", list(node.inputs), [in_shape], node.shape, p)
    if groups != 1:
        raise UnsupportedLayerError(f"{what}: grouped convolution (groups={groups}) has no kernel ({SUPPORTED})")
    if (kh, kw) == (1, 1) and geo["stride"] == (1, 1) and geo["pad"] == (0, 0, 0, 0):
        wp = np.ascontiguousarray(w.reshape(cout, cin), np.int8)
        p.update(weight=wp, bias=fold(bias, wp, zp_in))
        return QLayer(node.name, "pointwise", list(node.inputs), [in_shape], node.shape, p)
    wc = np.ascontiguousarray(w.transpose(0, 2, 3, 1), np.int8)  # OHWI
    p.update(geo, weight=wc, bias=fold(bias, wc, zp_in))  # im2col pads with zp_in: the fold is exact
    return QLayer(node.name, "conv", list(node.inputs), [in_shape], node.shape, p)


def lower_add(ctx: LoweringContext, node: Node) -> QLayer:
    """TF Lite's int8 add: both inputs shifted left 20, rescaled to twice the larger scale, summed, rescaled."""
    what = ctx.what(node)
    shapes = [ctx.graph[i].shape for i in node.inputs]
    if len(node.inputs) != 2 or shapes[0] != shapes[1]:
        raise UnsupportedLayerError(f"{what}: only an add of two equal shapes has a kernel (shapes {shapes})")
    (s1, z1), (s2, z2) = ctx.in_q(node, 0), ctx.in_q(node, 1)
    s_out, zp_out = ctx.out_q(node)
    twice = 2.0 * max(s1, s2)
    m1, sh1 = quantize_multiplier(s1 / twice)
    m2, sh2 = quantize_multiplier(s2 / twice)
    mo, sho = quantize_multiplier(twice / ((1 << ADD_LEFT_SHIFT) * s_out))
    p = {"zp1": z1, "zp2": z2, "zp_out": zp_out, "m1": m1, "sh1": sh1, "m2": m2, "sh2": sh2, "mo": mo, "sho": sho}
    p["act_min"], p["act_max"] = act_bounds(node, s_out, zp_out)
    return QLayer(node.name, "add", list(node.inputs), shapes, node.shape, p)


def _pool_base(ctx: LoweringContext, node: Node) -> tuple[dict[str, Any], float, float, tuple[int, ...]]:
    s_in, zp_in = ctx.in_q(node)
    s_out, zp_out = ctx.out_q(node)
    return {"zp_in": zp_in, "zp_out": zp_out}, s_in, s_out, ctx.graph[node.inputs[0]].shape


def _window(node: Node) -> dict[str, Any]:
    a = node.attrs
    kh, kw = a["kernel"]
    return {"kernel": (kh, kw), "stride": tuple(a.get("stride", (kh, kw))), "pad": tuple(a.get("padding", (0,) * 4))}


def mean_multiplier(s_in: float, s_out: float, n: int) -> tuple[int, int]:
    """TF Lite's integer mean (`QuantizedMeanOrSum`): s_in/s_out as (m, shift), then m·2^k / n in integers with
    k = min(floor(log2 n), 32, 31 + shift) and shift − k; applied to Σ(x − zp_in) by double rounding."""
    m, sh = quantize_multiplier(s_in / s_out)
    k = min(n.bit_length() - 1, 32, 31 + sh)
    return (m << k) // n, sh - k


def lower_global_avgpool(ctx: LoweringContext, node: Node) -> QLayer:
    """A mean over H×W: one rounding of s_in/(s_out·n) (`rounding=single`), TF Lite's integer mean (`tflite`)."""
    p, s_in, s_out, x = _pool_base(ctx, node)
    m, sh = quantize_multiplier(s_in / (s_out * x[2] * x[3]))
    tm, tsh = mean_multiplier(s_in, s_out, int(x[2] * x[3]))
    p.update(mult=m, shift=sh, tfl_mult=tm, tfl_shift=tsh)
    p["act_min"], p["act_max"] = act_bounds(node, s_out, p["zp_out"])
    return QLayer(node.name, "global_avgpool", list(node.inputs), [x], node.shape, p)


def lower_maxpool(ctx: LoweringContext, node: Node) -> QLayer:
    p, s_in, s_out, x = _pool_base(ctx, node)
    m, sh = quantize_multiplier(s_in / s_out)
    p.update(_window(node), mult=m, shift=sh)
    return QLayer(node.name, "maxpool", list(node.inputs), [x], node.shape, p)


def lower_avgpool(ctx: LoweringContext, node: Node) -> QLayer:
    """Average over the window's real pixels (`count_include_pad` = 0; the importers record it)."""
    p, s_in, s_out, x = _pool_base(ctx, node)
    p.update(_window(node))
    if node.attrs.get("count_include_pad", 0) and any(p["pad"]):
        raise UnsupportedLayerError(f"{ctx.what(node)}: average pooling with count_include_pad=1 has no kernel")
    kh, kw = p["kernel"]
    m, sh = requant(np.array([s_in / (s_out * n) for n in range(1, kh * kw + 1)]))
    p.update(mult=m, shift=sh)  # indexed by the window's count of real pixels minus one
    # TF Lite's int8 average pool (input and output quantized alike): the raw sum divided by the count, rounded
    # half away from zero; `rounding=tflite` takes it whenever the two quantizations are equal
    p["tfl_div"] = bool(np.float32(s_in) == np.float32(s_out) and p["zp_in"] == p["zp_out"])
    p["act_min"], p["act_max"] = act_bounds(node, s_out, p["zp_out"])
    return QLayer(node.name, "avgpool", list(node.inputs), [x], node.shape, p)


def _softmax(ctx: LoweringContext, node: Node) -> QLayer:
    """Integer softmax over the last axis: exp from a 256-entry table of exp(−d·s_in) in Q16 (d = max − x),
    the output q = zp_out + round(e·2^16/s_out / (Σe·2^16)) by int64 division (not TF Lite's gemmlowp exp)."""
    shape = ctx.graph[node.inputs[0]].shape
    axis = node.attrs.get("axis", -1) % len(shape)
    flat = int(np.prod(shape[:-1])) == 1
    if not flat or (axis != len(shape) - 1 and not (len(shape) == 4 and axis == 1 and shape[2] * shape[3] == 1)):
        raise UnsupportedLayerError(
            f"{ctx.what(node)}: softmax only over the last axis of a (1, F) tensor (shape {shape})"
        )
    s_in, _ = ctx.in_q(node)
    s_out, zp_out = ctx.out_q(node)
    table = np.array([round(np.exp(-d * s_in) * 2**SOFTMAX_BITS) for d in range(256)], np.int64)
    p = {"table": table.astype(np.int32), "inv": round(2**SOFTMAX_BITS / s_out), "zp_out": zp_out}
    return QLayer(node.name, "softmax", list(node.inputs), [shape], node.shape, p)


def lower_act(ctx: LoweringContext, node: Node) -> QLayer:
    """A stand-alone relu / relu6 / clip (requantized to its output's scale) or a softmax."""
    fn = node.attrs.get("fn")
    if fn == "softmax":
        return _softmax(ctx, node)
    if fn not in ("relu", "relu6", "clip"):
        raise UnsupportedLayerError(
            f"{ctx.label}: {ctx.what(node)}: activation '{fn}' has no int8 kernel in the C generator; supported: "
            f"{SUPPORTED}. Replace the op in the network, or deploy with backend=onnxruntime."
        )
    s_in, zp_in = ctx.in_q(node)
    s_out, zp_out = ctx.out_q(node)
    m, sh = quantize_multiplier(s_in / s_out)
    fake = Node(node.name, node.op, node.inputs, {"act": fn, "act_params": node.attrs.get("act_params")}, (), 0)
    lo, hi = act_bounds(fake, s_out, zp_out)
    p = {"zp_in": zp_in, "zp_out": zp_out, "mult": m, "shift": sh, "act_min": lo, "act_max": hi}
    return QLayer(node.name, "act", list(node.inputs), [ctx.graph[node.inputs[0]].shape], node.shape, p)


def _view(ctx: LoweringContext, node: Node) -> QLayer:
    """A reshape that keeps the NHWC element order (or one a linear layer's column order undoes): no code."""
    g = ctx.graph
    src = g[node.inputs[0]]
    readers = ctx.consumers.get(node.name, [])
    reorders = len(src.shape) == 4 and src.shape[2] * src.shape[3] > 1 and not node.attrs.get("nhwc")
    if reorders and not all(g[r].op in ("linear", *_VIEWS) for r in readers):
        raise UnsupportedLayerError(
            f"{ctx.what(node)}: a reshape of an H×W map read by something other than a linear layer changes "
            "the element order of the NHWC layout; the C generator supports flatten before a classifier only"
        )
    return QLayer(node.name, "view", list(node.inputs), [src.shape], node.shape, {})


def lower_flatten(ctx: LoweringContext, node: Node) -> QLayer:
    return _view(ctx, node)


def lower_reshape(ctx: LoweringContext, node: Node) -> QLayer:
    return _view(ctx, node)


def lower(ctx: LoweringContext, node: Node) -> QLayer:
    """The node's integer layer, by the lowering its op kind declares in the op-kind registry
    (`tinyflow.ir.op_registry`); a kind that declares none is an `UnsupportedLayerError` with its reason."""
    from tinyflow.ir.op_registry import op_part

    try:
        fn = op_part(node.op, "lowering")
    except IRError as exc:  # UnsupportedPart (the declared reason) or an unknown kind
        raise UnsupportedLayerError(
            f"{ctx.label}: {ctx.what(node)} has no kernel in the C generator ({exc}); supported: {SUPPORTED}. "
            "Replace the op in the network, or deploy with backend=onnxruntime."
        ) from None
    return fn(ctx, node)
