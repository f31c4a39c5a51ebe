"""The network IR: a DAG of nodes, each producing one tensor (named after the node), with NCHW shapes.

Pure Python: building and costing a graph never imports torch. A node records
- `op`: its op kind (see `tinyflow.ir.ops`), `attrs`, `inputs` (names of producer nodes), `shape` (its output);
- `block`: 0 for the stem, 1..N for the MBConv blocks in order, N+1 for the head / pool / classifier
  (imported graphs: from node names or the graph's structure, see `tinyflow.ir.blocks`);
- `weights`: role -> parameter name, so an executor can bind weights. Arch-built graphs use StaticNet's
  state_dict keys (`{"weight": "blocks.3.expand.0.weight", "bn": "blocks.3.expand.1"}`, the bn entry a module
  prefix), imported graphs ONNX initializer names or TFLite `t<index>:<tensor name>` (`{"weight": ..., "bias": ...}`);
- `elem_bytes`: bytes per activation element, or None to use `memory.dtype_bytes`.

A graph imported from a quantized model file also carries its quantization (`quant`: tensor name ->
`QuantParams`, activations by producing node, weights and biases by their `node.weights` names) and the stored
integer values of its weights and biases (`constants`: name -> NumPy array), see `tinyflow.ir.quant`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from tinyflow.ir.ops import IRError, Shape, get_op
from tinyflow.ir.quant import QuantParams


class Node:
    """One op and the tensor it produces."""

    __slots__ = ("attrs", "block", "elem_bytes", "inputs", "name", "op", "shape", "weights")

    def __init__(
        self,
        name: str,
        op: str,
        inputs: tuple[str, ...],
        attrs: dict[str, Any],
        shape: Shape,
        block: int,
        weights: dict[str, str] | None = None,
        elem_bytes: int | None = None,
    ):
        self.name = name
        self.op = op
        self.inputs = inputs
        self.attrs = attrs
        self.shape = shape
        self.block = block
        self.weights = weights or {}
        self.elem_bytes = elem_bytes

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op}, in={list(self.inputs)}, shape={list(self.shape)}, block={self.block})"


class Graph:
    """A DAG of `Node`s kept in a topological order (a node is added after its inputs)."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self.nodes: dict[str, Node] = {}
        self.outputs: list[str] = []
        self.meta: dict[str, Any] = {}
        self.quant: dict[str, QuantParams] = {}  # tensor name -> its quantization (quantized imports)
        self.constants: dict[str, Any] = {}  # weight / bias name -> stored values (NumPy; quantized imports)

    # ---- building ---------------------------------------------------------------------------------------
    def add(
        self,
        name: str,
        op: str,
        inputs: Sequence[str] = (),
        attrs: dict[str, Any] | None = None,
        block: int = 0,
        weights: dict[str, str] | None = None,
        elem_bytes: int | None = None,
    ) -> Node:
        """Add a node; its output shape is inferred now, so a mismatch names this node."""
        if name in self.nodes:
            raise IRError(f"node '{name}' is defined twice in graph '{self.name}'")
        kind = get_op(op)
        lo, hi = kind.n_inputs
        if len(inputs) < lo or (hi is not None and len(inputs) > hi):
            raise IRError(
                f"node '{name}' ({op}): takes {lo}..{hi if hi is not None else 'any'} inputs, got {len(inputs)}"
            )
        nodes = self.nodes
        try:
            in_shapes = [nodes[i].shape for i in inputs]
        except KeyError as exc:
            raise IRError(f"node '{name}' ({op}): input '{exc.args[0]}' is not defined before it") from None
        node = Node(name, op, tuple(inputs), attrs or {}, (), block, weights, elem_bytes)
        node.shape = kind.shape(node, in_shapes)
        nodes[name] = node
        return node

    def set_outputs(self, names: Sequence[str]) -> None:
        for n in names:
            if n not in self.nodes:
                raise IRError(f"graph '{self.name}': output '{n}' is not a node")
        self.outputs = list(names)

    # ---- queries --------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    @property
    def inputs(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.op == "input"]

    def in_shapes(self, node: Node) -> list[Shape]:
        return [self.nodes[i].shape for i in node.inputs]

    def consumers(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {n: [] for n in self.nodes}
        for node in self.nodes.values():
            for i in node.inputs:
                out[i].append(node.name)
        return out

    def topological_order(self) -> list[Node]:
        """Nodes in a valid execution order (Kahn's algorithm, stable w.r.t. insertion order)."""
        seen: set[str] = set()
        for name, node in self.nodes.items():  # `add` keeps insertion order topological: check, don't sort
            if not seen.issuperset(node.inputs):
                break
            seen.add(name)
        else:
            return list(self.nodes.values())
        indeg = {name: len(set(n.inputs)) for name, n in self.nodes.items()}
        cons = self.consumers()
        ready = [name for name, d in indeg.items() if d == 0]
        order: list[Node] = []
        pos = {name: i for i, name in enumerate(self.nodes)}
        import heapq

        heap = [(pos[n], n) for n in ready]
        heapq.heapify(heap)
        while heap:
            _, name = heapq.heappop(heap)
            order.append(self.nodes[name])
            for c in dict.fromkeys(cons[name]):
                indeg[c] -= 1
                if indeg[c] == 0:
                    heapq.heappush(heap, (pos[c], c))
        if len(order) != len(self.nodes):
            stuck = sorted(set(self.nodes) - {n.name for n in order})
            raise IRError(f"graph '{self.name}' has a cycle through nodes {stuck[:5]}")
        return order

    def validate(self) -> None:
        """Re-infer every shape from its inputs; raise `IRError` naming the first node that disagrees."""
        for node in self.topological_order():
            kind = get_op(node.op)
            for i in node.inputs:
                if i not in self.nodes:
                    raise IRError(f"node '{node.name}' ({node.op}): input '{i}' is not defined")
            shape = kind.shape(node, self.in_shapes(node))
            if tuple(shape) != tuple(node.shape):
                raise IRError(
                    f"node '{node.name}' ({node.op}): recorded shape {list(node.shape)} but its inputs give "
                    f"{list(shape)}"
                )
        for o in self.outputs:
            if o not in self.nodes:
                raise IRError(f"graph '{self.name}': output '{o}' is not a node")

    # ---- per-node costs --------------------------------------------------------------------------------
    def node_macs(self, node: Node) -> int:
        return get_op(node.op).macs(node, self.in_shapes(node), node.shape)

    def node_params(self, node: Node) -> tuple[int, int]:
        return get_op(node.op).params(node, self.in_shapes(node))

    def node_out_channels(self, node: Node) -> int:
        return get_op(node.op).out_channels(node, self.in_shapes(node), node.shape)

    def macs(self) -> int:
        return sum(self.node_macs(n) for n in self.nodes.values())

    def params(self) -> int:
        return sum(sum(self.node_params(n)) for n in self.nodes.values())

    @property
    def n_blocks(self) -> int:
        """Largest block index that holds a node."""
        return max((n.block for n in self.nodes.values()), default=0)

    def summary(self) -> str:
        lines = [f"Graph '{self.name}': {len(self.nodes)} nodes, {self.macs():,} MACs, {self.params():,} params"]
        for n in self.nodes.values():
            lines.append(f"  [{n.block:>2}] {n.name:<28} {n.op:<14} {list(n.shape)}")
        return "\n".join(lines)
