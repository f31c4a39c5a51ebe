"""Explicit pads as tensors of their own: the graph TF Lite Micro runs when the file has PAD ops.

The importers fold a zero pad that only convolutions read into their padding (TinyEngine pads on the fly; the
conv keeps the folded amount as `explicit_pad`). TF Lite Micro runs the PAD op and holds its padded output in the
arena until the conv has read it; `memory.fold_pads: false` plans `materialize_pads(graph)` instead.
"""

from __future__ import annotations

from tinyflow.ir.graph import Graph


def materialize_pads(graph: Graph) -> Graph:
    """A copy of `graph` where every conv with an `explicit_pad` reads a `pad` node that produces the padded map
    (the conv keeps only its own padding). The graph itself is returned when no conv has one."""
    if not any(n.op == "conv2d" and any(n.attrs.get("explicit_pad", ())) for n in graph):
        return graph
    out = Graph(graph.name)
    out.meta = dict(graph.meta)
    pad_of: dict[tuple[str, tuple[int, ...]], str] = {}  # one pad node per (input, amount), shared by its readers
    for n in graph.topological_order():
        attrs, inputs = dict(n.attrs), list(n.inputs)
        extra = tuple(attrs.pop("explicit_pad", ()) or ())
        if n.op == "conv2d" and any(extra):
            key = (inputs[0], extra)
            if key not in pad_of:
                src = out[inputs[0]]
                pad = out.add(f"{n.name}.pad", "pad", [src.name], {"padding": extra}, n.block, None, src.elem_bytes)
                pad_of[key] = pad.name
            inputs[0] = pad_of[key]
            attrs["padding"] = tuple(p - e for p, e in zip(attrs["padding"], extra))
        out.add(n.name, n.op, inputs, attrs, n.block, dict(n.weights), n.elem_bytes)
    out.set_outputs(graph.outputs)
    return out
