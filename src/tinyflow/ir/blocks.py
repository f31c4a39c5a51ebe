"""Block indices of an imported graph (stem = 0, blocks 1..N, tail N+1): from node names, else from structure.

Named: a node name containing `blocks.<i>` (as `torch.onnx.export(StaticNet)` writes, e.g.
`/blocks.3/expand/expand.0/Conv`) puts the node in block i+1; unnamed nodes before the first block are the stem,
those after the last block the tail.

Structural (any CNN, no names needed): a block boundary can only sit at a *cut* — a node after which its output is
the only tensor still to be read (a residual block's input stays alive through its add, so a residual block is
never cut inside). A cut ends a block when the node there closes one:
- a residual `add` (ResNet, MBConv with a skip);
- a 1×1 conv whose input comes from a depthwise conv (the pointwise of a MobileNetV1 / DS-CNN pair, the
  projection of an MBConv);
- a full (not depthwise, not 1×1) conv: the stem, a plain conv layer;
and pools, activations and pads right after such a boundary join the block before it. The tail starts at the first
global pool (or flatten / linear leaving the 4-D maps) that is a cut — a squeeze-excite's pool is not — plus a 1×1
conv with an activation that feeds it (a head conv, unless it is a depthwise's pointwise); a reshape that keeps
4 dims (a layout change) never starts the tail.
"""

from __future__ import annotations

import re

from tinyflow.ir.graph import Graph, Node

_BLOCK_RE = re.compile(r"(?:^|[/._])blocks[./_](\d+)(?:[/._]|$)")
_FOLLOWERS = {"maxpool", "avgpool", "act", "batchnorm", "pad", "convert"}


def _depthwise(node: Node) -> bool:
    return node.op == "conv2d" and node.attrs.get("groups", 1) > 1 and node.attrs.get("groups") == node.shape[1]


def _pointwise(node: Node) -> bool:
    return node.op == "conv2d" and tuple(node.attrs["kernel"]) == (1, 1) and node.attrs.get("groups", 1) == 1


def _producer_conv(graph: Graph, node: Node) -> Node | None:
    """The conv that produced `node`'s (first) input, looking through views and element-wise ops."""
    cur = graph[node.inputs[0]] if node.inputs else None
    while cur is not None and cur.op in ("act", "batchnorm", "reshape", "flatten", "convert") and cur.inputs:
        cur = graph[cur.inputs[0]]
    return cur if cur is not None and cur.op == "conv2d" else None


def cut_points(order: list[Node], graph: Graph) -> set[str]:
    """Nodes after which no earlier tensor is read any more (their output is all that stays alive)."""
    pos = {n.name: i for i, n in enumerate(order)}
    last = {n.name: pos[n.name] for n in order}
    for n in order:
        for i in n.inputs:
            if i in last:
                last[i] = max(last[i], pos[n.name])
    outputs = set(graph.outputs)
    cuts, reach = set(), -1
    for i, n in enumerate(order):
        if i > 0:
            reach = max(reach, last[order[i - 1].name] if order[i - 1].name not in outputs else len(order))
        if reach <= i:
            cuts.add(n.name)
    return cuts


def _starts_tail(graph: Graph, node: Node) -> bool:
    """A global pool, or the first op that leaves the 4-D feature maps (flatten, reshape to fewer dims, linear)."""
    if node.op in ("global_avgpool", "linear"):
        return True
    if node.op in ("avgpool", "maxpool"):
        src = graph[node.inputs[0]]
        return node.shape[2:] == (1, 1) and tuple(node.attrs["kernel"]) == tuple(src.shape[2:4])
    if node.op in ("flatten", "reshape"):
        return len(node.shape) < 4 and len(graph[node.inputs[0]].shape) == 4
    return False


def _closes_block(graph: Graph, node: Node) -> bool:
    if node.op == "add":
        return True
    if node.op != "conv2d":
        return False
    if _pointwise(node):
        prod = _producer_conv(graph, node)
        return prod is not None and _depthwise(prod)
    return not _depthwise(node)


def assign_blocks(graph: Graph) -> None:
    """Give every node its `block` (see the module docstring)."""
    order = graph.topological_order()
    named = {n.name: int(m.group(1)) + 1 for n in order if n.op != "input" and (m := _BLOCK_RE.search(n.name))}
    if named:
        last = max(named.values())
        seen_block = False
        for n in order:
            if n.name in named:
                n.block = named[n.name]
                seen_block = True
            else:
                n.block = last + 1 if seen_block else 0
        return
    structural_blocks(graph, order)


def structural_blocks(graph: Graph, order: list[Node] | None = None) -> None:
    """Blocks from the graph's structure alone (see the module docstring)."""
    order = order if order is not None else graph.topological_order()
    ops = [n for n in order if n.op != "input"]
    for n in order:
        n.block = 0
    if not ops:
        return
    cuts = cut_points(order, graph)
    # the tail starts at a global pool after which nothing else is alive (not a squeeze-excite's pool)
    tail_from = next((i for i, n in enumerate(ops) if _starts_tail(graph, n) and n.name in cuts), len(ops))
    # a head conv (1×1 with an activation) right before the global pool belongs to the tail
    while tail_from > 0:
        prev = ops[tail_from - 1]
        nxt = ops[tail_from] if tail_from < len(ops) else None
        prod = _producer_conv(graph, prev) if prev.op == "conv2d" else None
        head = _pointwise(prev) and prev.attrs.get("act") is not None and nxt is not None
        head = head and not (prod is not None and _depthwise(prod))  # a depthwise's pointwise is no head conv
        head = head and nxt.op in ("global_avgpool", "avgpool") and tail_from - 1 > 0
        if not head:
            break
        tail_from -= 1
    block, seen_conv, closed = 0, False, False
    for i, n in enumerate(ops):
        if i >= tail_from:
            n.block = block + 1 if tail_from > 0 else 0
            continue
        if closed:
            if n.op in _FOLLOWERS and n.name in cuts:  # a pool / act right after a boundary joins that block
                n.block = block
                continue
            block += 1
            closed = False
        n.block = block
        if n.op == "conv2d":
            seen_conv = True
        if n.name in cuts and seen_conv and _closes_block(graph, n):
            closed = True
