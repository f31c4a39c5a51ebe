"""What a memory convention adds to an analysis beyond the plan: which flash, and the runtime's persistent tail.

`memory.flash: file` counts the model file a TF Lite Micro deployment keeps in flash (an imported `.tflite`: its
bytes); `weights` (TinyEngine) counts int8 weights and per-channel constants — for an imported `.tflite` from its
real buffers (per-tensor layers get one scale, not one per channel). `memory.persistent: tflm` adds TF Lite Micro's
persistent arena tail (`tinyflow.memory.runtime_tail`, estimated for a 32-bit MCU) to what SRAM must hold.
"""

from __future__ import annotations

from typing import Any

from tinyflow.contracts import MemoryConfig
from tinyflow.ir.graph import Graph
from tinyflow.memory.runtime_tail import tflm_tail_bytes


def apply_memory_convention(analysis: dict[str, Any], graph: Graph, memory: MemoryConfig) -> None:
    """Set `flash_bytes` / `flash_source` and, with a persistent tail, `persistent_bytes` and `arena_total_bytes`."""
    meta = graph.meta
    if memory.flash == "file" and meta.get("file_bytes"):
        analysis["ir_flash_bytes"] = analysis["flash_bytes"]
        analysis["flash_bytes"], analysis["flash_source"] = int(meta["file_bytes"]), "model file (memory.flash=file)"
    elif memory.flash == "weights" and meta.get("weights_flash_bytes"):
        analysis["ir_flash_bytes"] = analysis["flash_bytes"]
        analysis["flash_bytes"] = int(meta["weights_flash_bytes"])
        analysis["flash_source"] = "the model file's weight buffers and scales"
    if memory.persistent == "tflm":
        tail = tflm_tail_bytes(graph)
        analysis["persistent_bytes"] = tail["total"]
        analysis["persistent_parts"] = {k: v for k, v in tail.items() if k != "total"}
        analysis["arena_total_bytes"] = analysis["arena_bytes"] + tail["total"]
