"""The integer model: an int8 QDQ ONNX file read into layers of integer constants, one per IR node.

Activations are int8 per tensor (scale, zero point), weights int8 symmetric per output channel, biases int32 at
scale s_in·s_w (what `tinyflow.deploy.quantize` writes). Each conv / linear gets a per-channel requantization
multiplier M = s_in·s_w / s_out as TF Lite's (m, shift); a residual add is TF Lite's rescaled add (left shift 20);
pools and stand-alone activations requantize from their input's scale to their output's. Layout is NHWC (channels
last), as TinyEngine and CMSIS-NN run; weights are stored in the order the C kernels read them, and where a
pointwise / depthwise / linear layer allows it the input zero point is folded into the bias (−zp_in·Σw).

An op the generator has no kernel for is an `UnsupportedLayerError` naming the op, the node and what is supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyflow.errors import TinyflowError
from tinyflow.firmware.fixedpoint import quantize_multiplier
from tinyflow.ir.graph import Graph, Node

SUPPORTED = (
    "conv2d (groups 1 or depthwise), linear, add, avgpool, global_avgpool, maxpool, relu/relu6/clip, softmax, "
    "flatten/reshape"
)
_PASS = {"Identity", "Dropout"}
_FUSED_ACTS = {"Relu", "Clip"}
ADD_LEFT_SHIFT = 20  # TF Lite's int8 add: inputs scaled up by 2^20 before rescaling
SOFTMAX_BITS = 16  # the softmax's exp table and output division in Q16
ROUNDINGS = ("tflite", "single")


class FirmwareError(TinyflowError):
    """The model cannot be turned into firmware as it is (the message names the file, node or field)."""


class UnsupportedLayerError(FirmwareError):
    """The model holds an op (or a variant of one) the C generator has no kernel for."""


@dataclass
class QLayer:
    """One integer layer: `kind` picks the kernel; `p` holds its constants (ints and NumPy arrays)."""

    name: str
    kind: str  # conv | pointwise | depthwise | linear | add | avgpool | global_avgpool | maxpool | act | view | rnnpool
    inputs: list[str]
    in_shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...]
    p: dict[str, Any] = field(default_factory=dict)


@dataclass
class QModel:
    """The layers in execution order, with the network input's and output's quantization."""

    graph: Graph
    layers: list[QLayer]
    input_name: str
    output_name: str
    input_scale: float
    input_zp: int
    output_scale: float
    output_zp: int
    int8_io: tuple[bool, bool] = (False, False)  # the ONNX file's input / output are int8 tensors (TF Lite models)

    def set_rounding(self, rounding: str) -> None:
        """`tflite` (TF Lite's double rounding, TF Lite Micro's default) or `single` (CMSIS-NN's
        CMSIS_NN_USE_SINGLE_ROUNDING): how convs, linears, adds and activations requantize (pools: single)."""
        if rounding not in ROUNDINGS:
            raise FirmwareError(f"firmware rounding = '{rounding}': use one of {', '.join(ROUNDINGS)}.")
        for layer in self.layers:
            layer.p["rounding"] = rounding

    @property
    def rounding(self) -> str:
        return next((la.p["rounding"] for la in self.layers if "rounding" in la.p), "tflite")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.graph[self.input_name].shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(self.graph[self.output_name].shape)

    def quantize_nchw(self, images: np.ndarray) -> np.ndarray:
        """Float NCHW images -> int8, as ONNX QuantizeLinear does it (round half to even, saturate)."""
        q = np.rint(np.asarray(images, np.float32) / np.float32(self.input_scale)) + self.input_zp
        return np.clip(q, -128, 127).astype(np.int8)

    def quantize_input(self, images: np.ndarray) -> np.ndarray:
        """Float NCHW images -> the firmware's int8 NHWC input."""
        return to_nhwc(self.quantize_nchw(images))

    def dequantize_output(self, out: np.ndarray) -> np.ndarray:
        return (np.asarray(out, np.float32) - self.output_zp) * np.float32(self.output_scale)


def to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else np.ascontiguousarray(x)


def hwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(H, W, C) of an NCHW shape; a flat (N, F) tensor is 1×1×F."""
    return (shape[2], shape[3], shape[1]) if len(shape) == 4 else (1, 1, int(np.prod(shape[1:])))


class _Onnx:
    """Lookups in the QDQ file: initializers, producers, consumers, nodes by the IR's names."""

    def __init__(self, path: str | Path):
        import onnx
        from onnx import numpy_helper

        self.path = str(path)
        model = onnx.load(self.path)
        g = model.graph
        self.consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.by_name: dict[str, Any] = {}
        for n in g.node:
            base = n.name or f"{n.op_type}_{n.output[0]}"
            name, k = base, 1
            while name in self.by_name:
                k += 1
                name = f"{base}_{k}"
            self.by_name[name] = n
        self.output_name = g.output[0].name
        self.input_name = next(v.name for v in g.input if v.name not in self.consts)
        self.int8_input = any(
            v.type.tensor_type.elem_type == onnx.TensorProto.INT8 for v in g.input if v.name not in self.consts
        )
        self.dq_of_const = {
            n.input[0]: n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in self.consts
        }

    def first_dequantize(self, tensor: str) -> Any:
        """The DequantizeLinear that reads an int8 graph input, through reshapes (a converter's layout change)."""
        todo = [tensor]
        while todo:
            for c in self.consumers.get(todo.pop(), []):
                if c.op_type == "DequantizeLinear":
                    return c
                if c.op_type in ("Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze"):
                    todo.append(c.output[0])
        raise UnsupportedLayerError(f"{self.path}: the int8 input '{tensor}' is never dequantized")

    def is_const(self, tensor: str) -> bool:
        p = self.producer.get(tensor)
        return tensor in self.consts or (
            p is not None and p.op_type == "DequantizeLinear" and p.input[0] in self.consts
        )

    def node(self, ir: Node) -> Any:
        n = self.by_name.get(ir.name)
        if n is None:
            raise FirmwareError(
                f"{self.path}: the IR node '{ir.name}' has no ONNX node of that name; re-import the file"
            )
        return n

    def qparams(self, node: Any) -> tuple[float, int]:
        scale = float(np.asarray(self.consts[node.input[1]]).reshape(-1)[0])
        zp_name = node.input[2] if len(node.input) > 2 else ""
        zp_arr = np.asarray(self.consts[zp_name]) if zp_name else np.zeros((), np.int8)
        if zp_arr.dtype != np.int8:
            raise UnsupportedLayerError(
                f"{self.path}: tensor '{node.input[0]}' is quantized to {zp_arr.dtype}; the C generator runs int8 "
                "activations only. Quantize with quantize.activation_type=int8."
            )
        return scale, int(zp_arr.reshape(-1)[0])

    def input_q(self, tensor: str, what: str) -> tuple[float, int]:
        """(scale, zp) of an activation read by a compute node: the DequantizeLinear that produced it."""
        seen = tensor
        while True:
            p = self.producer.get(seen)
            if p is None:
                break
            if p.op_type == "DequantizeLinear":
                return self.qparams(p)
            if p.op_type in _PASS or p.op_type == "Pad":
                seen = p.input[0]
                continue
            break
        raise UnsupportedLayerError(
            f"{self.path}: {what} reads '{tensor}', which is not int8 (no DequantizeLinear before it); the C "
            "generator needs a fully quantized QDQ model (tinyflow's quantize stage writes one)."
        )

    def output_q(self, tensor: str, what: str) -> tuple[float, int]:
        """(scale, zp) of an activation written by a node: the QuantizeLinear after it (through fused acts)."""
        for c in self.consumers.get(tensor, []):
            if c.op_type == "QuantizeLinear":
                return self.qparams(c)
        for c in self.consumers.get(tensor, []):
            bias_add = c.op_type == "Add" and any(self.is_const(i) for i in c.input)  # MatMul + Add = Gemm
            if c.op_type in _PASS or c.op_type in _FUSED_ACTS or bias_add:
                return self.output_q(c.output[0], what)
        raise UnsupportedLayerError(
            f"{self.path}: the output of {what} ('{tensor}') is not quantized (no QuantizeLinear after it); the C "
            "generator needs a fully quantized QDQ model."
        )

    def weight(self, name: str, what: str) -> tuple[np.ndarray, np.ndarray]:
        """The int8 weight initializer and its per-output-channel scales (zero points must be 0)."""
        w = np.asarray(self.consts.get(name))
        dq = self.dq_of_const.get(name)
        if w.dtype != np.int8 or dq is None:
            raise UnsupportedLayerError(
                f"{self.path}: {what}: weight '{name}' is not int8 with a DequantizeLinear; quantize the model "
                "with per-channel int8 weights (quantize.per_channel=true)."
            )
        scale = np.asarray(self.consts[dq.input[1]], np.float64).reshape(-1)
        zp = np.asarray(self.consts[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] else np.zeros(1)
        if np.any(zp != 0):
            raise UnsupportedLayerError(f"{self.path}: {what}: weight '{name}' has a non-zero zero point")
        return w, scale


def _act_bounds(node: Node, scale: float, zp: int) -> tuple[int, int]:
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


def _requant(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(real, np.float64).reshape(-1)]
    return np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32)


class _Builder:
    def __init__(self, onnx: _Onnx, graph: Graph):
        self.o = onnx
        self.g = graph
        self.consumers = graph.consumers()

    def what(self, node: Node) -> str:
        return f"node '{node.name}' ({node.op})"

    def conv_like(self, node: Node) -> QLayer:
        onode = self.o.node(node)
        what = self.what(node)
        s_in, zp_in = self.o.input_q(onode.input[0], what)
        s_out, zp_out = self.o.output_q(onode.output[0], what)
        w, s_w = self.o.weight(node.weights["weight"], what)
        if any(k.startswith("bn_") for k in node.weights):
            raise UnsupportedLayerError(f"{what}: an unfolded BatchNorm; export with BatchNorm folded into the conv")
        cout = node.attrs.get("out_channels", node.attrs.get("out_features"))
        s_w = np.broadcast_to(s_w, (cout,)).astype(np.float64)
        bias = np.zeros(cout, np.int64)
        if "bias" in node.weights:
            b = np.asarray(self.o.consts[node.weights["bias"]]).reshape(-1)
            bias = b.astype(np.int64) if b.dtype == np.int32 else np.rint(b / (s_in * s_w)).astype(np.int64)
        m, sh = _requant(np.float64(s_in) * s_w / np.float64(s_out))
        lo, hi = _act_bounds(node, s_out, zp_out)
        in_shape = self.g[node.inputs[0]].shape
        p: dict[str, Any] = {"zp_in": zp_in, "zp_out": zp_out, "mult": m, "shift": sh, "act_min": lo, "act_max": hi}
        if node.op == "linear":
            wt = w if node.attrs.get("weight_transposed", False) else w.T  # (out, in)
            wt = self._flatten_order(node, wt)
            p.update(weight=np.ascontiguousarray(wt, np.int8), bias=fold(bias, wt, zp_in))
            return QLayer(node.name, "linear", list(node.inputs), [in_shape], node.shape, p)
        a = node.attrs
        if tuple(a.get("dilation", (1, 1))) != (1, 1):
            raise UnsupportedLayerError(f"{what}: dilated convolution has no kernel in the C generator ({SUPPORTED})")
        kh, kw = a["kernel"]
        geo = {"kernel": (kh, kw), "stride": tuple(a.get("stride", (1, 1))), "pad": tuple(a.get("padding", (0,) * 4))}
        cin, groups = in_shape[1], a.get("groups", 1)
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

    def _flatten_order(self, node: Node, w: np.ndarray) -> np.ndarray:
        """A linear layer reading a flattened C×H×W map: reorder its columns to the NHWC element order."""
        src = self.g[node.inputs[0]]
        while src.op in ("flatten", "reshape"):
            src = self.g[src.inputs[0]]
        if len(src.shape) == 4 and src.shape[2] * src.shape[3] > 1:
            c, h, wd = src.shape[1:]
            return w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        return w

    def add(self, node: Node) -> QLayer:
        onode = self.o.node(node)
        what = self.what(node)
        shapes = [self.g[i].shape for i in node.inputs]
        if len(node.inputs) != 2 or shapes[0] != shapes[1]:
            raise UnsupportedLayerError(f"{what}: only an add of two equal shapes has a kernel (shapes {shapes})")
        (s1, z1), (s2, z2) = (self.o.input_q(t, what) for t in onode.input[:2])
        s_out, zp_out = self.o.output_q(onode.output[0], what)
        twice = 2.0 * max(s1, s2)
        m1, sh1 = quantize_multiplier(s1 / twice)
        m2, sh2 = quantize_multiplier(s2 / twice)
        mo, sho = quantize_multiplier(twice / ((1 << ADD_LEFT_SHIFT) * s_out))
        p = {"zp1": z1, "zp2": z2, "zp_out": zp_out, "m1": m1, "sh1": sh1, "m2": m2, "sh2": sh2, "mo": mo, "sho": sho}
        p["act_min"], p["act_max"] = -128, 127
        return QLayer(node.name, "add", list(node.inputs), shapes, node.shape, p)

    def pool(self, node: Node) -> QLayer:
        onode = self.o.node(node)
        what = self.what(node)
        s_in, zp_in = self.o.input_q(onode.input[0], what)
        s_out, zp_out = self.o.output_q(onode.output[0], what)
        x = self.g[node.inputs[0]].shape
        p: dict[str, Any] = {"zp_in": zp_in, "zp_out": zp_out}
        if node.op == "global_avgpool":
            m, sh = quantize_multiplier(s_in / (s_out * x[2] * x[3]))
            p.update(mult=m, shift=sh)
            return QLayer(node.name, "global_avgpool", list(node.inputs), [x], node.shape, p)
        a = node.attrs
        kh, kw = a["kernel"]
        p.update(kernel=(kh, kw), stride=tuple(a.get("stride", (kh, kw))), pad=tuple(a.get("padding", (0,) * 4)))
        if node.op == "maxpool":
            m, sh = quantize_multiplier(s_in / s_out)
            p.update(mult=m, shift=sh)
            return QLayer(node.name, "maxpool", list(node.inputs), [x], node.shape, p)
        from onnx.helper import get_attribute_value

        attrs = {at.name: get_attribute_value(at) for at in onode.attribute}
        if attrs.get("count_include_pad", 0) and any(p["pad"]):
            raise UnsupportedLayerError(f"{what}: average pooling with count_include_pad=1 has no kernel")
        m, sh = _requant(np.array([s_in / (s_out * n) for n in range(1, kh * kw + 1)]))
        p.update(mult=m, shift=sh)  # indexed by the window's count of real pixels minus one
        return QLayer(node.name, "avgpool", list(node.inputs), [x], node.shape, p)

    def act(self, node: Node) -> QLayer:
        fn = node.attrs.get("fn")
        what = self.what(node)
        if fn == "softmax":
            return self.softmax(node)
        if fn not in ("relu", "relu6", "clip"):
            raise UnsupportedLayerError(
                f"{self.o.path}: {what}: activation '{fn}' has no int8 kernel in the C generator; supported: "
                f"{SUPPORTED}. Replace the op in the network, or deploy with backend=onnxruntime."
            )
        onode = self.o.node(node)
        s_in, zp_in = self.o.input_q(onode.input[0], what)
        s_out, zp_out = self.o.output_q(onode.output[0], what)
        m, sh = quantize_multiplier(s_in / s_out)
        fake = Node(node.name, node.op, node.inputs, {"act": fn, "act_params": node.attrs.get("act_params")}, (), 0)
        lo, hi = _act_bounds(fake, s_out, zp_out)
        p = {"zp_in": zp_in, "zp_out": zp_out, "mult": m, "shift": sh, "act_min": lo, "act_max": hi}
        return QLayer(node.name, "act", list(node.inputs), [self.g[node.inputs[0]].shape], node.shape, p)

    def softmax(self, node: Node) -> QLayer:
        """Integer softmax over the last axis: exp from a 256-entry table of exp(−d·s_in) in Q16 (d = max − x),
        the output q = zp_out + round(e·2^16/s_out / (Σe·2^16)) by int64 division (not TF Lite's gemmlowp exp)."""
        onode = self.o.node(node)
        what = self.what(node)
        shape = self.g[node.inputs[0]].shape
        axis = node.attrs.get("axis", -1) % len(shape)
        if axis != len(shape) - 1 or int(np.prod(shape[:-1])) != 1:
            raise UnsupportedLayerError(f"{what}: softmax only over the last axis of a (1, F) tensor (shape {shape})")
        s_in, _ = self.o.input_q(onode.input[0], what)
        s_out, zp_out = self.o.output_q(onode.output[0], what)
        table = np.array([round(np.exp(-d * s_in) * 2**SOFTMAX_BITS) for d in range(256)], np.int64)
        p = {"table": table.astype(np.int32), "inv": round(2**SOFTMAX_BITS / s_out), "zp_out": zp_out}
        return QLayer(node.name, "softmax", list(node.inputs), [shape], node.shape, p)

    def view(self, node: Node) -> QLayer:
        src = self.g[node.inputs[0]]
        readers = self.consumers[node.name]
        reorders = len(src.shape) == 4 and src.shape[2] * src.shape[3] > 1
        if reorders and not all(self.g[r].op in ("linear", "flatten", "reshape") for r in readers):
            raise UnsupportedLayerError(
                f"{self.what(node)}: a reshape of an H×W map read by something other than a linear layer changes "
                "the element order of the NHWC layout; the C generator supports flatten before a classifier only"
            )
        return QLayer(node.name, "view", list(node.inputs), [src.shape], node.shape, {})

    def layer(self, node: Node) -> QLayer:
        if node.op in ("conv2d", "linear"):
            return self.conv_like(node)
        if node.op == "add":
            return self.add(node)
        if node.op in ("global_avgpool", "avgpool", "maxpool"):
            return self.pool(node)
        if node.op == "act":
            return self.act(node)
        if node.op in ("flatten", "reshape"):
            return self.view(node)
        raise UnsupportedLayerError(
            f"{self.o.path}: {self.what(node)} has no kernel in the C generator; supported: {SUPPORTED}. Replace the "
            "op in the network, or deploy with backend=onnxruntime."
        )


def fold(bias: np.ndarray, w: np.ndarray, zp_in: int) -> np.ndarray:
    """bias − zp_in·Σw per output channel: Σ(x − zp)·w = Σx·w − zp·Σw, exact in integers."""
    folded = np.asarray(bias, np.int64) - int(zp_in) * w.reshape(w.shape[0], -1).astype(np.int64).sum(axis=1)
    if np.any(np.abs(folded) >= 2**31):
        raise FirmwareError("a folded bias overflows int32")
    return folded.astype(np.int32)


def build_qmodel(onnx_path: str | Path, graph: Graph | None = None) -> QModel:
    """Read the int8 QDQ ONNX file into integer layers (the IR imported from the same file unless given; a graph
    with an `rnnpool` node is an RNNPool network's description: `rnnpool_model.build_rnnpool_qmodel`)."""
    from tinyflow.ir.onnx_import import from_onnx

    graph = graph if graph is not None else from_onnx(onnx_path)
    if any(n.op == "rnnpool" for n in graph):  # the description of an RNNPool network (its stem runs in float32)
        from tinyflow.firmware.rnnpool_model import build_rnnpool_qmodel

        return build_rnnpool_qmodel(onnx_path, graph)
    o = _Onnx(onnx_path)
    b = _Builder(o, graph)
    inputs = graph.inputs
    if len(inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedLayerError(
            f"{onnx_path}: the C generator runs networks with one input and one output "
            f"(inputs {inputs}, outputs {graph.outputs})"
        )
    layers = [b.layer(n) for n in graph.topological_order() if n.op != "input"]
    if o.int8_input:  # an int8 graph input (a converted TF Lite model): its DequantizeLinear has the scale
        s_in, zp_in = o.qparams(o.first_dequantize(o.input_name))
    else:
        s_in, zp_in = o.output_q(inputs[0], "the network input")
    producer = o.producer.get(o.output_name)
    if producer is not None and producer.op_type == "QuantizeLinear":  # an int8 graph output
        s_out, zp_out = o.qparams(producer)
    else:
        s_out, zp_out = o.input_q(o.output_name, "the network output")
    int8_out = producer is not None and producer.op_type == "QuantizeLinear"
    return QModel(graph, layers, inputs[0], graph.outputs[0], s_in, zp_in, s_out, zp_out, (o.int8_input, int8_out))
