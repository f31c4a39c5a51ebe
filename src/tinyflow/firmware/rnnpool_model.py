"""The integer model of an RNNPool network: the int8 QDQ ONNX of `RNNPoolNet` read against its IR.

The importer does not read the ops RNNPool exports to (Gather, MatMul, Sigmoid, …), so the schedule stage plans
the network's description (`tinyflow.ir.rnnpool.rnnpool_graph`, node names = RNNPoolNet's parameter names). This
module maps each IR node to its ONNX node — a conv or linear by its weight's module path (`blocks.4.expand.0`
is `/blocks.4/expand/expand.0/Conv`), any other op by its order among the ONNX nodes of its kind — and builds
the int8 layers with the same `_Builder` as `qmodel.build_qmodel`. The `rnnpool` node becomes one layer of kind
`rnnpool` whose RNN weights are the int8 file's, dequantized to float32 (the firmware computes RNNPool in float32
on the FPU); it reads the stem's int8 output and writes the int8 tensor the first kept block reads, at that
tensor's scale and zero point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinyflow.firmware.qmodel import (
    FirmwareError,
    QLayer,
    QModel,
    UnsupportedLayerError,
    _Builder,
    _Onnx,
)
from tinyflow.ir.dequantize import dequantize
from tinyflow.ir.graph import Graph, Node

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


def module_path(onnx_name: str) -> str:
    """`/blocks.4/expand/expand.0/Conv` -> `blocks.4.expand.0` (TorchScript's scope names, op type dropped)."""
    parts: list[str] = []
    for seg in onnx_name.strip("/").split("/")[:-1]:
        if parts and seg.startswith(parts[-1] + "."):
            parts[-1] = seg
        else:
            parts.append(seg)
    return ".".join(parts)


class _RenamedOnnx(_Onnx):
    """The QDQ file with its nodes looked up by the IR's names (`node()` is the one lookup `_Builder` uses)."""

    def __init__(self, path: str | Path, mapping: dict[str, Any]):
        super().__init__(path)
        self.mapping = mapping

    def node(self, ir: Node) -> Any:
        n = self.mapping.get(ir.name)
        if n is None:
            raise FirmwareError(f"{self.path}: the IR node '{ir.name}' has no ONNX node in the file")
        return n

    def const_source(self, tensor: str) -> str:
        """The initializer behind a weight input: through its DequantizeLinear when there is one."""
        p = self.producer.get(tensor)
        return p.input[0] if p is not None and p.op_type == "DequantizeLinear" else tensor

    def float_const(self, name: str) -> np.ndarray:
        """A constant as float: an initializer, or the dequantized int8 one behind it (`<name>_quantized`)."""
        if name in self.consts and self.consts[name].dtype.kind == "f":
            return np.asarray(self.consts[name], np.float64)
        src = name if name in self.dq_of_const else f"{name}_quantized"
        dq = self.dq_of_const.get(src)
        if dq is None:
            raise FirmwareError(f"{self.path}: no constant '{name}' (float or dequantized) in the file")
        zp = self.consts[dq.input[2]] if len(dq.input) > 2 and dq.input[2] else None
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)  # ONNX's default axis
        return dequantize(self.consts[src], self.consts[dq.input[1]], zp, axis)


def map_nodes(graph: Graph, o: _RenamedOnnx) -> dict[str, Any]:
    """IR node name -> ONNX node for every IR node but the input and the rnnpool."""
    outside = [n for n in o.by_name.values() if not (n.name or "").startswith(RNNPOOL_SCOPE)]
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
            raise UnsupportedLayerError(
                f"{o.path}: IR node '{node.name}' ({node.op}) has no ONNX node in the file; the RNNPool firmware reads "
                "the int8 export of RNNPoolNet (tinyflow's quantize stage) planned as tinyflow.ir.rnnpool_graph"
            )
        used.add(id(found))
        mapping[node.name] = found
    return mapping


def _with_file_weights(node: Node, onode: Any, o: _RenamedOnnx) -> Node:
    """The IR node with its weights named as the file stores them (int8 weight, int32 bias), as the importer does."""
    if "weight" not in node.weights:
        return node
    weights = {"weight": o.const_source(onode.input[1])}
    if len(onode.input) > 2 and onode.input[2]:
        weights["bias"] = o.const_source(onode.input[2])
    attrs = dict(node.attrs)
    if node.op == "linear":
        trans_b = next((a.i for a in onode.attribute if a.name == "transB"), 0)
        attrs["weight_transposed"] = bool(trans_b) if onode.op_type == "Gemm" else False
    return Node(node.name, node.op, node.inputs, attrs, node.shape, node.block, weights, node.elem_bytes)


def _cell(o: _RenamedOnnx, index: int, ir: Node, in_size: int, hidden: int) -> dict[str, Any]:
    """RNN cell `rnn<index>`: W (g·h, in) and U (g·h, h) from its MatMuls (W is the first: the input projection),
    biases and FastGRNN's ζ = σ(ζ_raw), ν = σ(ν_raw), all float32."""
    scope = f"{RNNPOOL_SCOPE}rnn{index}"
    cell = ir.attrs.get("cell", "fastgrnn")
    gates = 1 if cell == "fastgrnn" else 3
    mms = sorted(
        (n for n in o.by_name.values() if n.op_type == "MatMul" and (n.name or "").startswith(scope)),
        key=lambda n: (len(n.name), n.name),
    )
    first = next((n for n in mms if n.name.endswith("/MatMul")), None)
    others = {n.input[1] for n in mms} - ({first.input[1]} if first is not None else set())
    if first is None or len(others) != 1:
        raise FirmwareError(
            f"{o.path}: RNNPool cell rnn{index}: expected one input-projection MatMul ({scope}/MatMul) and one "
            f"recurrent weight; found MatMuls {[n.name for n in mms]}. Export RNNPoolNet as tinyflow's quantize stage "
            "does."
        )
    w = o.float_const(o.const_source(first.input[1])).T  # the file holds Wᵀ (in, g·h)
    u = o.float_const(o.const_source(others.pop())).T
    if w.shape != (gates * hidden, in_size) or u.shape != (gates * hidden, hidden):
        raise FirmwareError(
            f"{o.path}: RNNPool cell rnn{index} ({cell}): weights {w.shape}, {u.shape}; the IR says "
            f"({gates * hidden}, {in_size}) and ({gates * hidden}, {hidden})"
        )
    f32 = np.float32
    p: dict[str, Any] = {"cell": cell, "hidden": hidden, "w": w.astype(f32), "u": u.astype(f32)}
    prefix = f"rnnpool.rnn{index}"
    names = ("b_z", "b_h") if cell == "fastgrnn" else ("b_i", "b_h")
    for b in names:
        p[b] = o.float_const(f"{prefix}.{b}").reshape(-1).astype(f32)
    if cell == "fastgrnn":
        for s in ("zeta", "nu"):
            raw = float(o.float_const(f"{prefix}.{s}").reshape(-1)[0])
            p[s] = f32(1.0 / (1.0 + np.exp(-raw)))
    return p


def rnnpool_layer(node: Node, graph: Graph, o: _RenamedOnnx, stem: QLayer, consumer: Any) -> QLayer:
    """The `rnnpool` IR node as a float32 layer between the stem's int8 output and the next layer's int8 input."""
    a = node.attrs
    f = graph[node.inputs[0]].shape[1]
    s_out, zp_out = o.input_q(consumer.input[0], f"the input of '{consumer.name}' (RNNPool's output)")
    p = {
        "patch": tuple(a["patch"]),
        "stride": tuple(a["stride"]),
        "padding": tuple(a.get("padding", (0, 0))),
        "pooled_hw": tuple(node.shape[2:]),
        "rnn1": _cell(o, 1, node, f, a["hidden1"]),
        "rnn2": _cell(o, 2, node, a["hidden1"], a["hidden2"]),
        "zp_in": stem.p["zp_out"],
        "scale_in": float(stem.p["scale_out"]),
        "scale_out": s_out,
        "zp_out": zp_out,
    }
    return QLayer(node.name, "rnnpool", list(node.inputs), [graph[node.inputs[0]].shape], node.shape, p)


def build_rnnpool_qmodel(onnx_path: str | Path, graph: Graph) -> QModel:
    """The QModel of an RNNPool network: `graph` is the IR the plan was made from (`rnnpool_graph`), the file
    the int8 QDQ export of the same network."""
    rnnpools = [n for n in graph.topological_order() if n.op == "rnnpool"]
    if len(rnnpools) != 1 or graph[rnnpools[0].inputs[0]].op != "conv2d":
        raise UnsupportedLayerError(
            f"{onnx_path}: the C generator runs one RNNPool fed by the stem conv (tinyflow.ir.rnnpool_graph); "
            f"graph '{graph.name}' has {len(rnnpools)} rnnpool nodes"
        )
    o = _RenamedOnnx(onnx_path, {})
    o.mapping = map_nodes(graph, o)
    b = _Builder(o, graph)
    consumers = graph.consumers()
    layers: list[QLayer] = []
    for node in graph.topological_order():
        if node.op == "input":
            continue
        if node.op == "rnnpool":
            stem = layers[-1]
            first = o.mapping[consumers[node.name][0]]
            layers.append(rnnpool_layer(node, graph, o, stem, first))
            continue
        layer = b.layer(_with_file_weights(node, o.mapping[node.name], o))
        if node.name == rnnpools[0].inputs[0]:
            layer.p["scale_out"] = o.output_q(o.mapping[node.name].output[0], f"the stem '{node.name}'")[0]
        layers.append(layer)
    inputs, outputs = graph.inputs, graph.outputs
    s_in, zp_in = o.output_q(o.input_name, "the network input")
    s_out, zp_out = o.input_q(o.output_name, "the network output")
    return QModel(graph, layers, inputs[0], outputs[0], s_in, zp_in, s_out, zp_out)


RECORD_FILE = "analysis.json"  # the schedule stage's analysis, beside the int8 file in a run directory


def recorded_graph(onnx_path: str | Path) -> Graph | None:
    """The IR of the network the schedule stage recorded beside the int8 file (`analysis.json`'s
    `deployed_network`) when that network is an RNNPool one, else None."""
    import json

    from tinyflow.network import DeployedNetwork

    record = Path(onnx_path).with_name(RECORD_FILE)
    if not record.is_file():
        return None
    net = json.loads(record.read_text()).get("deployed_network")
    if not net or net.get("kind") != "rnnpool":
        return None
    graph = DeployedNetwork.from_dict(net).graph()
    graph.meta["onnx_path"] = str(onnx_path)
    return graph


def no_description_error(onnx_path: str | Path, op: str) -> FirmwareError:
    """The one paragraph for an RNNPool int8 file without the network's description beside it."""
    return UnsupportedLayerError(
        f"{onnx_path}: the file holds op {op}, which the importer does not read (an RNNPool network exports to "
        "Gather, MatMul, Sigmoid, …), so the firmware takes the network's IR from the description the schedule "
        f"stage records beside the int8 file ({Path(onnx_path).with_name(RECORD_FILE)}, `deployed_network`), and "
        "there is none of kind rnnpool there. Generate RNNPool firmware from a pipeline run (`python -m tinyflow "
        "scheduler=rnnpool backend=c`, or `python -m tinyflow.firmware network.path=<run dir>/model_int8.onnx "
        "scheduler=rnnpool`), or in Python with `make_firmware(..., qmodel=build_rnnpool_qmodel(path, graph))`."
    )


def required_graph(onnx_path: str | Path, op: str) -> Graph:
    """`recorded_graph`, or the one paragraph (`no_description_error`) when the file has no RNNPool description."""
    graph = recorded_graph(onnx_path)
    if graph is None:
        raise no_description_error(onnx_path, op)
    return graph
