"""Attach an int8 QDQ ONNX file's weights and quantization to a description graph (an RNNPool network's).

The importer does not read the ops RNNPool exports to (Gather, MatMul, Sigmoid, …), so the schedule stage plans
the network's description (`tinyflow.ir.rnnpool.rnnpool_graph`, node names = RNNPoolNet's parameter names).
`attach_onnx_constants(graph, path)` fills that graph's `quant` and `constants` from the int8 export of the same
network, once, at schedule time; nothing after it opens the file for weights. Matching: a conv or linear node is
the ONNX node of its weight's module path (`blocks.4.expand.0` is `/blocks.4/expand/expand.0/Conv`), any other op
the next ONNX node of a type that computes it, in file order. Stored:

- `constants[weight]` the int8 weight (file layout; a linear's `weight_transposed` set from the file's Gemm) and
  `constants[<module>.bias]` (`bias_name`) its int32 bias, `quant` of both (per channel);
- `quant[node]` each node's output (the QuantizeLinear after it), `quant[input]`, and `quant[rnnpool]` the int8
  tensor RNNPool writes (what its first reader dequantizes);
- for the `rnnpool` node, float32 `constants[rnnpool.rnn<i>.<w|u|b_z|b_h|b_i|zeta|nu>]`: W (g·h, in), U (g·h, h),
  the biases and FastGRNN's ζ = σ(ζ_raw), ν = σ(ν_raw) (already through the sigmoid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinyflow.ir.dequantize import dequantize
from tinyflow.ir.graph import Graph, Node
from tinyflow.ir.model_errors import ModelImportError
from tinyflow.ir.quant import QuantParams

RNNPOOL_SCOPE = "/rnnpool/"
#: IR op -> the ONNX op types that compute it (ops matched by order)
ORDERED_OPS = {
    "add": ("Add",),
    "global_avgpool": ("GlobalAveragePool", "ReduceMean"),
    "avgpool": ("AveragePool",),
    "maxpool": ("MaxPool",),
    "flatten": ("Flatten", "Reshape"),
    "reshape": ("Reshape", "Flatten"),
    "act": ("Relu", "Clip", "Softmax"),
}
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
_PASS = {"Identity", "Dropout"}
_FUSED_ACTS = {"Relu", "Clip"}


class OnnxConstantsError(ModelImportError):
    """The int8 file does not hold the description graph's network (a node, weight or quantization is missing)."""


def bias_name(node: Node) -> str:
    """The name of a conv's / linear's bias in `graph.constants`: its own, else `<module>.bias`."""
    return node.weights.get("bias") or node.weights["weight"].removesuffix(".weight") + ".bias"


def module_path(onnx_name: str) -> str:
    """`/blocks.4/expand/expand.0/Conv` -> `blocks.4.expand.0` (TorchScript's scope names, op type dropped)."""
    parts: list[str] = []
    for seg in onnx_name.strip("/").split("/")[:-1]:
        if parts and seg.startswith(parts[-1] + "."):
            parts[-1] = seg
        else:
            parts.append(seg)
    return ".".join(parts)


class _File:
    """Lookups in the QDQ file: constants, producers, consumers, quantization of tensors."""

    def __init__(self, path: str | Path):
        import onnx
        from onnx import numpy_helper

        self.path = str(path)
        g = onnx.load(self.path).graph
        self.nodes = list(g.node)
        self.consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for n in self.nodes:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.input_name = next(v.name for v in g.input if v.name not in self.consts)
        self.output_name = g.output[0].name
        self.dq_of_const = {
            n.input[0]: n for n in self.nodes if n.op_type == "DequantizeLinear" and n.input[0] in self.consts
        }

    def fail(self, msg: str) -> OnnxConstantsError:
        return OnnxConstantsError(f"{self.path}: {msg}")

    def qparams(self, node: Any, values: np.ndarray | None = None) -> QuantParams:
        scale = np.asarray(self.consts[node.input[1]], np.float64)
        has_zp = len(node.input) > 2 and node.input[2]
        zp = np.asarray(self.consts[node.input[2]]) if has_zp else np.zeros(1, np.int8)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if values is not None and values.ndim:
            axis = axis % values.ndim if axis < 0 else min(axis, values.ndim - 1)
        return QuantParams.of(scale, zp, axis, str(values.dtype if values is not None else zp.dtype))

    def const_source(self, tensor: str) -> str:
        """The initializer behind a weight input: through its DequantizeLinear when there is one."""
        p = self.producer.get(tensor)
        return p.input[0] if p is not None and p.op_type == "DequantizeLinear" else tensor

    def stored(self, tensor: str) -> tuple[np.ndarray, QuantParams | None]:
        """A weight input's stored values and their quantization (None for a float constant)."""
        src = self.const_source(tensor)
        if src not in self.consts:
            raise self.fail(f"'{tensor}' is not a constant of the file")
        value = np.asarray(self.consts[src])
        dq = self.dq_of_const.get(src)
        return value, (self.qparams(dq, value) if dq is not None else None)

    def float_const(self, name: str) -> np.ndarray:
        """A constant as float: an initializer, or the dequantized int8 one behind it (`<name>_quantized`)."""
        if name in self.consts and self.consts[name].dtype.kind == "f":
            return np.asarray(self.consts[name], np.float64)
        src = name if name in self.dq_of_const else f"{name}_quantized"
        dq = self.dq_of_const.get(src)
        if dq is None:
            raise self.fail(f"no constant '{name}' (float or dequantized) in the file")
        zp = self.consts[dq.input[2]] if len(dq.input) > 2 and dq.input[2] else None
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        return dequantize(self.consts[src], self.consts[dq.input[1]], zp, axis)

    def is_const(self, tensor: str) -> bool:
        p = self.producer.get(tensor)
        return tensor in self.consts or (
            p is not None and p.op_type == "DequantizeLinear" and p.input[0] in self.consts
        )

    def input_q(self, tensor: str) -> QuantParams | None:
        """The quantization of an activation a node reads: the DequantizeLinear that produced it."""
        while (p := self.producer.get(tensor)) is not None:
            if p.op_type == "DequantizeLinear":
                return self.qparams(p)
            if p.op_type not in _PASS and p.op_type != "Pad":
                return None
            tensor = p.input[0]
        return None

    def output_q(self, tensor: str) -> QuantParams | None:
        """The quantization of an activation a node writes: the QuantizeLinear after it (through fused acts)."""
        readers = self.consumers.get(tensor, [])
        for c in readers:
            if c.op_type == "QuantizeLinear":
                return self.qparams(c)
        for c in readers:
            bias_add = c.op_type == "Add" and any(self.is_const(i) for i in c.input)  # MatMul + Add = Gemm
            if c.op_type in _PASS or c.op_type in _FUSED_ACTS or bias_add:
                return self.output_q(c.output[0])
        return None


def map_nodes(graph: Graph, f: _File) -> dict[str, Any]:
    """IR node name -> ONNX node for every IR node but the input and the rnnpool."""
    outside = [n for n in f.nodes if not (n.name or "").startswith(RNNPOOL_SCOPE)]
    weighted = {module_path(n.name): n for n in outside if n.op_type in WEIGHTED_OPS and n.name}
    used: set[int] = set()
    mapping: dict[str, Any] = {}
    for node in graph.topological_order():
        if node.op in ("input", "rnnpool"):
            continue
        if "weight" in node.weights:
            found = weighted.get(node.weights["weight"].removesuffix(".weight"))
        else:  # the first unused ONNX node of a type that computes this op, in file order
            types = ORDERED_OPS.get(node.op, ())
            found = next((n for n in outside if n.op_type in types and id(n) not in used), None)
        if found is None:
            raise f.fail(
                f"IR node '{node.name}' ({node.op}) has no ONNX node in the file; the file must be the int8 export "
                "of the network the graph describes (tinyflow's quantize stage writes it)"
            )
        used.add(id(found))
        mapping[node.name] = found
    return mapping


def _attach_weights(graph: Graph, node: Node, onode: Any, f: _File) -> None:
    w, wq = f.stored(onode.input[1])
    name = node.weights["weight"]
    graph.constants[name] = w
    if wq is not None:
        graph.quant[name] = wq
    if len(onode.input) > 2 and onode.input[2]:
        b, bq = f.stored(onode.input[2])
        graph.constants[bias_name(node)] = b
        if bq is not None:
            graph.quant[bias_name(node)] = bq
    if node.op == "linear":
        trans_b = next((a.i for a in onode.attribute if a.name == "transB"), 0)
        node.attrs["weight_transposed"] = bool(trans_b) if onode.op_type == "Gemm" else False


def _cell(f: _File, graph: Graph, index: int, node: Node) -> None:
    """RNN cell `rnn<index>` as float32 constants: W and U from its MatMuls (W the input projection), biases, and
    FastGRNN's ζ, ν through the sigmoid."""
    scope = f"{RNNPOOL_SCOPE}rnn{index}"
    cell = node.attrs.get("cell", "fastgrnn")
    mms = sorted(
        (n for n in f.nodes if n.op_type == "MatMul" and (n.name or "").startswith(scope)),
        key=lambda n: (len(n.name), n.name),
    )
    first = next((n for n in mms if n.name.endswith("/MatMul")), None)
    others = {n.input[1] for n in mms} - ({first.input[1]} if first is not None else set())
    if first is None or len(others) != 1:
        raise f.fail(
            f"RNNPool cell rnn{index}: expected one input-projection MatMul ({scope}/MatMul) and one recurrent "
            f"weight; found MatMuls {[n.name for n in mms]}. Export RNNPoolNet as tinyflow's quantize stage does."
        )
    prefix = f"{node.weights.get(f'rnn{index}', f'rnnpool.rnn{index}')}"
    f32 = np.float32
    out = {
        "w": f.float_const(f.const_source(first.input[1])).T,  # the file holds Wᵀ (in, g·h)
        "u": f.float_const(f.const_source(others.pop())).T,
    }
    for b in ("b_z", "b_h") if cell == "fastgrnn" else ("b_i", "b_h"):
        out[b] = f.float_const(f"{prefix}.{b}").reshape(-1)
    if cell == "fastgrnn":
        for s in ("zeta", "nu"):
            raw = float(f.float_const(f"{prefix}.{s}").reshape(-1)[0])
            out[s] = np.asarray(1.0 / (1.0 + np.exp(-raw)))
    for key, value in out.items():
        graph.constants[f"{prefix}.{key}"] = np.asarray(value, f32)


def _attach_activation(graph: Graph, name: str, q: QuantParams | None, f: _File) -> None:
    if q is None:
        raise f.fail(
            f"the output of IR node '{name}' is not quantized (no QuantizeLinear after it); give the fully "
            "quantized QDQ export (tinyflow's quantize stage writes one)"
        )
    graph.quant[name] = q


def attach_onnx_constants(graph: Graph, onnx_path: str | Path) -> None:
    """Fill `graph.quant` and `graph.constants` of a description graph from its network's int8 QDQ file."""
    f = _File(onnx_path)
    mapping = map_nodes(graph, f)
    consumers = graph.consumers()
    for node in graph.topological_order():
        if node.op == "input":
            _attach_activation(graph, node.name, f.output_q(f.input_name), f)
        elif node.op == "rnnpool":
            reader = mapping[consumers[node.name][0]]
            _attach_activation(graph, node.name, f.input_q(reader.input[0]), f)
            for i in (1, 2):
                _cell(f, graph, i, node)
        else:
            onode = mapping[node.name]
            if "weight" in node.weights:
                _attach_weights(graph, node, onode, f)
            q = f.output_q(onode.output[0])
            if q is not None or node.op not in ("flatten", "reshape"):  # a view may share its input's
                _attach_activation(graph, node.name, q, f)
    graph.meta["onnx_path"] = str(onnx_path)
    graph.meta["int8_io"] = [False, False]
