"""The persistent tail of TF Lite Micro's arena (`memory.persistent: tflm`), estimated from struct layouts.

Beside the activations (the arena's head, what the planners place), TF Lite Micro keeps in its arena, for the
interpreter's life: a `TfLiteEvalTensor` per tensor of the model (data and dims pointers, a type), a
`NodeAndRegistration` per operator (`TfLiteNode`: six pointers and an int, plus the registration pointer), each
kernel's OpData (a conv's: zero points, the output multiplier and shift, padding, activation range, two pointers)
with a conv's per-channel output multipliers and shifts (two int32 per output channel), the `TfLiteTensor`s and
quantization records of the graph's inputs and outputs, and the allocator's own records. The sizes below follow
those structs for a 32-bit MCU (4-byte pointers); `pointer_bytes=8` gives the host build's layout, which is what
the `tflite-micro` wheel measures. It is an estimate: kernels with scratch buffers (CMSIS-NN) add to it.
"""

from __future__ import annotations

from tinyflow.ir.graph import Graph


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


def tflm_tail_bytes(graph: Graph, pointer_bytes: int = 4) -> dict[str, int]:
    """The estimated persistent tail, by part, and its `total`, for `graph` run by TF Lite Micro."""
    p = pointer_bytes
    meta = graph.meta.get("tflite_counts") or {}
    ops = [n for n in graph if n.op != "input"]
    n_tensors = int(meta.get("tensors", len(graph) + sum(len(n.weights) for n in graph)))
    n_ops = int(meta.get("operators", len(ops)))
    weighted = [n for n in ops if n.op in ("conv2d", "linear")]
    per_channel = sum(8 * n.attrs["out_channels"] for n in ops if n.op == "conv2d")
    opdata = _align(56 + 2 * p, p)  # OpDataConv / OpDataFullyConnected
    tensor = _align(24 + 5 * p, p)  # a persistent TfLiteTensor (inputs and outputs)
    parts = {
        "eval_tensors": n_tensors * _align(2 * p + 4, p),
        "nodes": n_ops * (_align(6 * p + 4, p) + p),
        "kernel_opdata": len(weighted) * opdata,
        "per_channel_quantization": per_channel,
        "io_tensors": (len(graph.inputs) + len(graph.outputs)) * (tensor + 4 * p),
        "allocator": 100 * p,  # MicroAllocator, subgraph and scratch-buffer records
    }
    parts["total"] = sum(parts.values())
    return parts
