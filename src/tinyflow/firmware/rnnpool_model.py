"""The integer model of an RNNPool network: its description graph, carrying the int8 file's constants.

The importer does not read the ops RNNPool exports to (Gather, MatMul, Sigmoid, …), so the schedule stage plans
the network's description (`tinyflow.ir.rnnpool.rnnpool_graph`, node names = RNNPoolNet's parameter names) and
attaches the int8 file's weights and quantization to it once (`tinyflow.ir.onnx_constants.attach_onnx_constants`);
the Deployment carries that graph. Every node but the `rnnpool` one lowers as any int8 layer
(`tinyflow.firmware.lowering`); the `rnnpool` node becomes one layer of kind `rnnpool` whose RNN weights are the
graph's float32 constants (the firmware computes RNNPool in float32 on the FPU); it reads the stem's int8 output
and writes the int8 tensor the first kept block reads, at that tensor's scale and zero point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinyflow.firmware.lowering import LoweringContext, lower
from tinyflow.firmware.qmodel import FirmwareError, QLayer, QModel, UnsupportedLayerError
from tinyflow.ir.graph import Graph, Node

CELL_KEYS = {"fastgrnn": ("w", "u", "b_z", "b_h", "zeta", "nu"), "gru": ("w", "u", "b_i", "b_h")}


def _cell(graph: Graph, node: Node, index: int, in_size: int, hidden: int) -> dict[str, Any]:
    """RNN cell `rnn<index>` from the graph's float32 constants, its shapes checked against the IR."""
    cell = node.attrs.get("cell", "fastgrnn")
    prefix = node.weights.get(f"rnn{index}", f"rnnpool.rnn{index}")
    missing = [k for k in CELL_KEYS[cell] if f"{prefix}.{k}" not in graph.constants]
    if missing:
        raise FirmwareError(
            f"graph '{graph.name}': RNNPool cell rnn{index} has no constants {missing}; attach the int8 file's "
            "weights to the description first (tinyflow.ir.onnx_constants.attach_onnx_constants)"
        )
    p: dict[str, Any] = {"cell": cell, "hidden": hidden}
    for k in CELL_KEYS[cell]:
        value = np.asarray(graph.constants[f"{prefix}.{k}"], np.float32)
        p[k] = np.float32(value.reshape(-1)[0]) if k in ("zeta", "nu") else value
    gates = 1 if cell == "fastgrnn" else 3
    if p["w"].shape != (gates * hidden, in_size) or p["u"].shape != (gates * hidden, hidden):
        raise FirmwareError(
            f"graph '{graph.name}': RNNPool cell rnn{index} ({cell}): weights {p['w'].shape}, {p['u'].shape}; the IR "
            f"says ({gates * hidden}, {in_size}) and ({gates * hidden}, {hidden})"
        )
    return p


def rnnpool_layer(ctx: LoweringContext, node: Node, stem: QLayer) -> QLayer:
    """The `rnnpool` IR node as a float32 layer between the stem's int8 output and the next layer's int8 input."""
    graph, a = ctx.graph, node.attrs
    f = graph[node.inputs[0]].shape[1]
    s_out, zp_out = ctx.out_q(node)
    p = {
        "patch": tuple(a["patch"]),
        "stride": tuple(a["stride"]),
        "padding": tuple(a.get("padding", (0, 0))),
        "pooled_hw": tuple(node.shape[2:]),
        "rnn1": _cell(graph, node, 1, f, a["hidden1"]),
        "rnn2": _cell(graph, node, 2, a["hidden1"], a["hidden2"]),
        "zp_in": stem.p["zp_out"],
        "scale_in": float(stem.p["scale_out"]),
        "scale_out": s_out,
        "zp_out": zp_out,
    }
    return QLayer(node.name, "rnnpool", list(node.inputs), [graph[node.inputs[0]].shape], node.shape, p)


def build_rnnpool_qmodel(graph: Graph) -> QModel:
    """The QModel of an RNNPool network: `graph` is the description the plan was made from (`rnnpool_graph`),
    carrying the int8 file's constants and quantization."""
    rnnpools = [n for n in graph.topological_order() if n.op == "rnnpool"]
    if len(rnnpools) != 1 or graph[rnnpools[0].inputs[0]].op != "conv2d":
        raise UnsupportedLayerError(
            f"the C generator runs one RNNPool fed by the stem conv (tinyflow.ir.rnnpool_graph); graph "
            f"'{graph.name}' has {len(rnnpools)} rnnpool nodes"
        )
    if not graph.quant:
        raise FirmwareError(
            f"graph '{graph.name}' (an RNNPool network's description) carries no quantization; attach its int8 "
            "file's weights first (tinyflow.ir.onnx_constants.attach_onnx_constants, which the schedule stage runs)"
        )
    ctx = LoweringContext.of(graph)
    layers: list[QLayer] = []
    for node in graph.topological_order():
        if node.op == "input":
            continue
        if node.op == "rnnpool":
            layers.append(rnnpool_layer(ctx, node, layers[-1]))
            continue
        layer = lower(ctx, node)
        if node.name == rnnpools[0].inputs[0]:
            layer.p["scale_out"] = ctx.out_q(node)[0]
        layers.append(layer)
    inputs, outputs = graph.inputs, graph.outputs
    s_in, zp_in = ctx.act_q(inputs[0], "the network input")
    s_out, zp_out = ctx.act_q(outputs[0], "the network output")
    return QModel(graph, layers, inputs[0], outputs[0], s_in, zp_in, s_out, zp_out)


def recorded_graph(onnx_path: str | Path) -> tuple[Graph, Any] | None:
    """The description graph (with the file's constants attached) and network of the Deployment the schedule
    stage saved beside the int8 file, when that network is an RNNPool one; else None."""
    from tinyflow.deployment import DEPLOYMENT_FILE, Deployment
    from tinyflow.ir.onnx_constants import attach_onnx_constants

    record = Path(onnx_path).with_name(DEPLOYMENT_FILE)
    if not record.is_file():
        return None
    deployment = Deployment.load(record)
    net = deployment.network
    if net is None or net.kind != "rnnpool":
        return None
    graph = deployment.graph if any(n.op == "rnnpool" for n in deployment.graph) else net.graph()
    if not graph.quant:
        attach_onnx_constants(graph, onnx_path)
    return graph, net


def no_description_error(onnx_path: str | Path, op: str) -> FirmwareError:
    """The one paragraph for an RNNPool int8 file without the network's description beside it."""
    from tinyflow.deployment import DEPLOYMENT_FILE

    return UnsupportedLayerError(
        f"{onnx_path}: the file holds op {op}, which the importer does not read (an RNNPool network exports to "
        "Gather, MatMul, Sigmoid, …), so the firmware takes the network from the Deployment the schedule stage "
        f"saves beside the int8 file ({Path(onnx_path).with_name(DEPLOYMENT_FILE)}), and there is none of an "
        "RNNPool network there. Generate RNNPool firmware from a pipeline run (`python -m tinyflow "
        "scheduler=rnnpool backend=c`, or `python -m tinyflow.firmware network.path=<run dir>/model_int8.onnx "
        "scheduler=rnnpool`), or in Python: `attach_onnx_constants(rnnpool_graph(arch), path)`, then "
        "`plan_deployment` and `make_firmware`."
    )


def required_graph(onnx_path: str | Path, op: str) -> tuple[Graph, Any]:
    """`recorded_graph`, or the one paragraph (`no_description_error`) when there is no RNNPool description."""
    found = recorded_graph(onnx_path)
    if found is None:
        raise no_description_error(onnx_path, op)
    return found
