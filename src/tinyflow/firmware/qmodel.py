"""The integer model: an int8 graph lowered into layers of integer constants, one per IR node.

Built from the graph alone — its quantization (`graph.quant`) and stored integers (`graph.constants`), which the
ONNX and TF Lite importers fill alike — through `tinyflow.firmware.lowering` (one function per op); no model file
is read here.

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
from typing import Any

import numpy as np

from tinyflow.errors import TinyflowError
from tinyflow.ir.graph import Graph

SUPPORTED = (
    "conv2d (groups 1 or depthwise), linear, add, avgpool, global_avgpool, maxpool, relu/relu6/clip, softmax, "
    "flatten/reshape"
)
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
    int8_io: tuple[bool, bool] = (False, False)  # the model file's input / output are int8 tensors (TF Lite models)

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


def fold(bias: np.ndarray, w: np.ndarray, zp_in: int) -> np.ndarray:
    """bias − zp_in·Σw per output channel: Σ(x − zp)·w = Σx·w − zp·Σw, exact in integers."""
    folded = np.asarray(bias, np.int64) - int(zp_in) * w.reshape(w.shape[0], -1).astype(np.int64).sum(axis=1)
    if np.any(np.abs(folded) >= 2**31):
        raise FirmwareError("a folded bias overflows int32")
    return folded.astype(np.int32)


def build_qmodel(graph: Graph) -> QModel:
    """The integer layers of an int8 graph, from its quantization and constants alone (`tinyflow.ir.quant`; the
    importers fill both, `tinyflow.ir.onnx_constants.attach_onnx_constants` for a description graph). A graph with
    an `rnnpool` node is an RNNPool network's description: `rnnpool_model.build_rnnpool_qmodel`."""
    from tinyflow.firmware.lowering import LoweringContext, lower

    if any(n.op == "rnnpool" for n in graph):  # the description of an RNNPool network (its stem runs in float32)
        from tinyflow.firmware.rnnpool_model import build_rnnpool_qmodel

        return build_rnnpool_qmodel(graph)
    ctx = LoweringContext.of(graph)
    if not graph.quant:
        raise UnsupportedLayerError(
            f"{ctx.label}: the graph carries no quantization; the C generator needs an int8 model (a QDQ .onnx, "
            "which tinyflow's quantize stage writes, or an int8 .tflite)."
        )
    inputs = graph.inputs
    if len(inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedLayerError(
            f"{ctx.label}: the C generator runs networks with one input and one output "
            f"(inputs {inputs}, outputs {graph.outputs})"
        )
    layers = [lower(ctx, n) for n in graph.topological_order() if n.op != "input"]
    s_in, zp_in = ctx.act_q(inputs[0], "the network input")
    s_out, zp_out = ctx.act_q(graph.outputs[0], "the network output")
    int8_in, int8_out = (bool(v) for v in graph.meta.get("int8_io", (False, False)))
    return QModel(graph, layers, inputs[0], graph.outputs[0], s_in, zp_in, s_out, zp_out, (int8_in, int8_out))
