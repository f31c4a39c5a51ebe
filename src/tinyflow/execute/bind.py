"""Bind float32 weights to an IR's nodes: from a `StaticNet`'s state_dict, or from an ONNX file's initializers.

Both use the names the IR keeps in `node.weights` (arch graphs: StaticNet state_dict keys, with `bn` a module
prefix; imported graphs: ONNX initializer names). BatchNorm is folded into the conv's weight and bias in float64
and stored as float32, so layer and patch execution run the same folded weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyflow.errors import ConfigError
from tinyflow.execute.kernels import ConvParams
from tinyflow.execute.runner import Executor
from tinyflow.ir.dequantize import dequantize
from tinyflow.ir.graph import Graph, Node

_BN_EPS = 1e-5


def _fold(w: np.ndarray, b: np.ndarray | None, gamma, beta, mean, var, eps: float) -> ConvParams:
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    shape = (-1,) + (1,) * (w.ndim - 1)
    w2 = np.asarray(w, np.float64) * scale.reshape(shape)
    b0 = np.zeros_like(scale) if b is None else np.asarray(b, np.float64)
    b2 = (b0 - np.asarray(mean, np.float64)) * scale + np.asarray(beta, np.float64)
    return ConvParams(torch.from_numpy(w2.astype(np.float32)), torch.from_numpy(b2.astype(np.float32)))


def _plain(w: np.ndarray, b: np.ndarray | None) -> ConvParams:
    t = torch.from_numpy(np.asarray(w, np.float32).copy())
    return ConvParams(t, None if b is None else torch.from_numpy(np.asarray(b, np.float32).copy()))


def bind(graph: Graph, tensors: Mapping[str, Any], eps_of: Mapping[str, float] | None = None) -> Executor:
    """An Executor for `graph` whose weights come from `tensors` (name -> array), as named by `node.weights`."""
    eps_of = eps_of or {}
    params: dict[str, ConvParams] = {}

    def get(node: Node, name: str) -> np.ndarray:
        if name not in tensors:
            raise ConfigError(f"executor: node '{node.name}' needs weight '{name}', which the model does not have")
        v = tensors[name]
        return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

    for node in graph:
        roles = node.weights
        if not roles:
            continue
        if node.op in ("conv2d", "linear"):
            w = get(node, roles["weight"])
            b = get(node, roles["bias"]) if roles.get("bias") else None
            if "bn" in roles:  # a module prefix (arch graphs)
                p = roles["bn"]
                eps = eps_of.get(p, node.attrs.get("eps", _BN_EPS))
                bn = [get(node, f"{p}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]
                params[node.name] = _fold(w, b, *bn, eps)
            elif "bn_scale" in roles:  # separate initializers (imported graphs)
                bn = [get(node, roles[k]) for k in ("bn_scale", "bn_bias", "bn_mean", "bn_var")]
                params[node.name] = _fold(w, b, *bn, node.attrs.get("bn_eps", _BN_EPS))
            else:
                params[node.name] = _plain(w, b)
            if node.op == "linear" and node.attrs.get("weight_transposed") is False:  # MatMul / Gemm transB=0
                params[node.name].weight = params[node.name].weight.t().contiguous()
        elif node.op == "act" and "constant" in roles:
            params[node.name] = _plain(get(node, roles["constant"]), None)
        elif node.op == "batchnorm":
            if "bn" in roles:
                p = roles["bn"]
                bn = [get(node, f"{p}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]
                eps = eps_of.get(p, node.attrs.get("eps", _BN_EPS))
            else:
                bn = [get(node, roles[k]) for k in ("bn_scale", "bn_bias", "bn_mean", "bn_var")]
                eps = node.attrs.get("eps", _BN_EPS)
            ones = np.ones_like(np.asarray(bn[0], np.float64))
            params[node.name] = _fold(ones, None, *bn, eps)
    return Executor(graph, params)


def from_static(net: torch.nn.Module, graph: Graph | None = None) -> Executor:
    """An Executor running `net`'s weights (a `StaticNet`, BatchNorm statistics as in eval mode)."""
    from tinyflow.ir import from_arch

    graph = graph if graph is not None else from_arch(net.arch)
    eps_of = {name: float(m.eps) for name, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    return bind(graph, net.state_dict(), eps_of)


def onnx_initializers(path: str | Path) -> dict[str, np.ndarray]:
    """name -> float array of every initializer and Constant of an ONNX file.

    A QDQ model's quantized weights are dequantized ((q - zero_point) · scale, per axis), keeping the quantized
    initializer's name as tinyflow's importer does; activation Q/DQ pairs are not simulated (float execution).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in out:
            continue
        zp = out[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
        out[node.input[0]] = dequantize(out[node.input[0]], out[node.input[1]], zp, axis).astype(np.float32)
    return out


def onnx_activation_ranges(path: str | Path, graph: Graph) -> dict[str, tuple[float, float]]:
    """IR node -> the float range its output's QuantizeLinear can represent, for a QDQ model.

    The int8 quantizer drops a Relu / Clip whose effect the output's quantization range already has (the
    QuantizeLinear saturates); running that model in float must keep the clamp. Rounding is not simulated: it
    is elementwise noise that would make patch and layer execution differ wherever a value sits on a rounding
    boundary.
    """
    if any(name in graph.nodes for name in graph.quant):  # the importer's record: no second walk of the file
        return quant_ranges(graph)
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer: dict[str, str] = {name: name for name in graph.inputs}  # onnx tensor -> IR node
    ranges: dict[str, tuple[float, float]] = {}
    for node in model.graph.node:
        if not node.output:
            continue
        if node.name in graph.nodes:
            producer[node.output[0]] = node.name
        elif node.input and node.input[0] in producer:  # fused or pass-through: the same IR tensor
            producer[node.output[0]] = producer[node.input[0]]
        if node.op_type == "QuantizeLinear" and node.input[0] in producer and node.input[1] in consts:
            scale = float(np.asarray(consts[node.input[1]]).reshape(-1)[0])
            zp_arr = consts.get(node.input[2]) if len(node.input) > 2 else None
            zp = float(np.asarray(zp_arr).reshape(-1)[0]) if zp_arr is not None else 0.0
            info = np.iinfo(zp_arr.dtype) if zp_arr is not None else np.iinfo(np.uint8)
            lo, hi = (info.min - zp) * scale, (info.max - zp) * scale
            name = producer[node.input[0]]
            old = ranges.get(name, (lo, hi))
            ranges[name] = (max(lo, old[0]), min(hi, old[1]))
    return ranges


def from_onnx(path: str | Path, graph: Graph | None = None) -> Executor:
    """An Executor running the weights stored in an ONNX file, on the graph tinyflow imports from it.

    Float models run as stored. QDQ int8 models run their dequantized weights in float, with each activation
    clamped to its quantization range (see `onnx_activation_ranges`).
    """
    if graph is None:
        from tinyflow.ir import from_onnx as import_onnx

        graph = import_onnx(path)
    ex = bind(graph, onnx_initializers(path))
    ex.clamps = onnx_activation_ranges(path, graph)
    return ex


def tflite_tensors(path: str | Path, graph: Graph) -> dict[str, np.ndarray]:
    """IR weight name -> float array of a TFLite model's constants, dequantized ((q - zero_point) · scale, per
    channel) from `graph.constants` / `graph.quant` (the importer stores conv weights as OIHW already); an
    element-wise constant broadcast in NCHW. `path` is read only for a graph imported without constants."""
    if not graph.constants:
        return _tflite_file_tensors(path, graph)
    users = {w: n for n in graph for w in n.weights.values()}
    out: dict[str, np.ndarray] = {}
    for name, value in graph.constants.items():
        v = np.asarray(value, np.float64)
        q = graph.quant.get(name)
        if q is not None and np.asarray(value).dtype.kind in "iu":
            v = dequantize(v, q.scales(), q.zero_points(), q.axis if q.axis is not None else 0)
        node = users.get(name)
        if node is not None and node.op == "act" and len(node.shape) == 4:  # broadcast against an NCHW map
            v = v.transpose(0, 3, 1, 2) if v.ndim == 4 else v.reshape(1, -1, 1, 1) if v.ndim == 1 else v
        out[name] = v.astype(np.float32)
    return out


def _tflite_file_tensors(path: str | Path, graph: Graph) -> dict[str, np.ndarray]:
    """`tflite_tensors` from the file itself (a graph deserialised without its constants)."""
    from tinyflow.ir.tflite_file import read_tflite

    model = read_tflite(path)
    index = graph.meta.get("weights", {})
    layout = {w: n for n in graph for w in n.weights.values()}
    out: dict[str, np.ndarray] = {}
    for name, i in index.items():
        t = model.tensors[i]
        if t.data is None:
            continue
        v = np.asarray(t.data, np.float64)
        if t.scale is not None and t.type_name in ("int8", "uint8", "int16", "int32"):
            v = dequantize(v, t.scale, t.zero_point, t.quantized_dimension)
        node = layout.get(name)
        kind = node.attrs.get("weight_layout") if node is not None else None
        if kind == "OHWI" and node is not None and node.weights.get("weight") == name:
            v = v.transpose(0, 3, 1, 2)
        elif kind == "1HWO" and node is not None and node.weights.get("weight") == name:
            v = v.transpose(3, 0, 1, 2)
        elif node is not None and node.op == "act" and len(node.shape) == 4:  # broadcast against an NCHW map
            v = v.transpose(0, 3, 1, 2) if v.ndim == 4 else v.reshape(1, -1, 1, 1) if v.ndim == 1 else v
        out[name] = v.astype(np.float32)
    return out


def quant_ranges(graph: Graph) -> dict[str, tuple[float, float]]:
    """IR node -> the float range its quantized output can represent (`graph.quant`, per tensor), as clamps."""
    bounds = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}
    out = {}
    for name, q in graph.quant.items():
        if name in graph.nodes and q.dtype in bounds and q.per_tensor:
            lo, hi = bounds[q.dtype]
            scale, zp = q.scalar
            out[name] = ((lo - zp) * scale, (hi - zp) * scale)
    return out


def tflite_activation_ranges(graph: Graph) -> dict[str, tuple[float, float]]:
    """IR node -> the float range its int8 output can represent (the imported quantization), as clamps."""
    return quant_ranges(graph)


def from_tflite(path: str | Path, graph: Graph | None = None) -> Executor:
    """An Executor running a TFLite file's weights (dequantized, float) on the graph tinyflow imports from it,
    each activation clamped to its quantization range."""
    if graph is None:
        from tinyflow.ir.tflite_import import from_tflite as import_tflite

        graph = import_tflite(path)
    ex = bind(graph, tflite_tensors(path, graph))
    ex.clamps = tflite_activation_ranges(graph)
    return ex
