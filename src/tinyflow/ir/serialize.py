"""A Graph as JSON-ready data and back (nodes, outputs, meta, quantization); constants travel beside it as arrays.

Used by the `Deployment` file (`tinyflow.deployment`): the IR a run planned is saved with the plan, so a resumed
run or a backend reads the very graph that was planned instead of importing the model file again.
"""

from __future__ import annotations

from typing import Any

from tinyflow.ir.graph import Graph
from tinyflow.ir.quant import QuantParams


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and small arrays in attrs
        return value.tolist()
    return value


def _tuples(value: Any) -> Any:
    """Attrs come back with tuples where the IR writes tuples (kernel, stride, padding, ...): lists -> tuples."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def graph_to_dict(graph: Graph) -> dict[str, Any]:
    """The graph without its constants (those are arrays: `graph.constants`)."""
    return {
        "name": graph.name,
        "nodes": [
            {
                "name": n.name,
                "op": n.op,
                "inputs": list(n.inputs),
                "attrs": _plain(n.attrs),
                "shape": list(n.shape),
                "block": n.block,
                "weights": dict(n.weights),
                "elem_bytes": n.elem_bytes,
            }
            for n in graph
        ],
        "outputs": list(graph.outputs),
        "meta": _plain({k: v for k, v in graph.meta.items() if k != "quantization"}),
        "quant": {k: q.to_dict() for k, q in graph.quant.items()},
    }


def graph_from_dict(data: dict[str, Any], constants: dict[str, Any] | None = None) -> Graph:
    """Rebuild a graph; every shape is re-inferred by `Graph.add` and must equal the recorded one."""
    g = Graph(data["name"])
    for nd in data["nodes"]:
        node = g.add(
            nd["name"], nd["op"], nd["inputs"], _tuples(nd["attrs"]), nd["block"], nd["weights"], nd["elem_bytes"]
        )
        if list(node.shape) != list(nd["shape"]):
            from tinyflow.ir.ops import IRError

            raise IRError(f"node '{node.name}': recorded shape {nd['shape']}, its inputs give {list(node.shape)}")
    g.set_outputs(data["outputs"])
    g.meta.update(data.get("meta", {}))
    g.quant.update({k: QuantParams.from_dict(v) for k, v in data.get("quant", {}).items()})
    g.constants.update(constants or {})
    return g
