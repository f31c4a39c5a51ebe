"""Flash as an int8 runtime stores a model (docs/design.md §6 "Flash", TinyEngine's count).

Per conv / linear: int8 weights (1 B each) + an int32 bias (4 B) and a 4 B per-channel requantization scale
per output channel — BatchNorm folded, so every conv gets a bias. Other weighted ops (a stand-alone batch
norm) store their parameters as int8 scale and int32 shift. A model's flash is this count alone; the device's
runtime (`device.flash_reserve_kb`, e.g. ~37 KB for TF Lite Micro per MicroNets) is taken off its flash budget.
"""

from __future__ import annotations

from tinyflow.ir.graph import Graph, Node

WEIGHT_BYTES = 1
BIAS_BYTES = 4
SCALE_BYTES = 4


def node_flash_bytes(graph: Graph, node: Node) -> int:
    weights, bias = graph.node_params(node)
    if not weights and not bias:
        return 0
    channels = graph.node_out_channels(node)
    if channels:
        return weights * WEIGHT_BYTES + channels * (BIAS_BYTES + SCALE_BYTES)
    return weights * WEIGHT_BYTES + bias * BIAS_BYTES


def model_flash_bytes(graph: Graph) -> int:
    """Flash for the model's parameters alone (no runtime overhead)."""
    return sum(node_flash_bytes(graph, n) for n in graph)
