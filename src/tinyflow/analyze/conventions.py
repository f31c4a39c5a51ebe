"""What a memory convention adds to an analysis beyond the plan: which flash, and the runtime's persistent tail.

`model_flash` is the one place the deployed network's flash is decided (docs/design.md §1, §6): the cost model's
count of the IR, unless a model file says more. `memory.flash: file` counts the model file a TF Lite Micro
deployment keeps in flash (its bytes); `weights` (TinyEngine) counts int8 weights and per-channel constants — of
the int8 ONNX file the pipeline deployed, from its initializers; of an imported `.tflite`, from its real buffers
(per-tensor layers get one scale, not one per channel). `memory.persistent: tflm` adds TF Lite Micro's persistent
arena tail (`tinyflow.memory.runtime_tail`, estimated for a 32-bit MCU) to what SRAM must hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinyflow.contracts import MemoryConfig
from tinyflow.ir.graph import Graph
from tinyflow.memory.runtime_tail import tflm_tail_bytes

COST_MODEL_FLASH = "cost model (IR)"


def model_flash(ir_flash: int, graph: Graph, memory: MemoryConfig, model_path: str | None = None) -> tuple[int, str]:
    """(flash bytes, where they come from) of the deployed network: `model_path` (the int8 file the pipeline
    deployed) first, then what the importer recorded of the file `graph` came from, else `ir_flash`."""
    path = Path(model_path) if model_path and Path(model_path).is_file() else None
    meta = graph.meta
    if memory.flash == "file":
        if path is not None:
            return path.stat().st_size, "int8 model file size (memory.flash=file)"
        if meta.get("file_bytes"):
            return int(meta["file_bytes"]), "model file (memory.flash=file)"
    elif memory.flash == "weights":
        if path is not None and path.suffix == ".onnx":
            from tinyflow.deploy.quantize import int8_flash_bytes

            return int(int8_flash_bytes(path)["flash_bytes"]), "int8 ONNX initializers"
        if meta.get("weights_flash_bytes"):
            return int(meta["weights_flash_bytes"]), "the model file's weight buffers and scales"
    return int(ir_flash), COST_MODEL_FLASH


def apply_memory_convention(
    analysis: dict[str, Any], graph: Graph, memory: MemoryConfig, model_path: str | None = None
) -> None:
    """What the convention adds to an analysis: flash by `model_flash` where the analysis has only the IR's
    count (`analyze` decides it when it builds the analysis), and with a runtime's persistent tail
    (`memory.persistent: tflm`) `persistent_bytes`, `persistent_parts` and `arena_total_bytes`."""
    if "flash_source" not in analysis:
        ir_flash = analysis["flash_bytes"]
        analysis["flash_bytes"], analysis["flash_source"] = model_flash(ir_flash, graph, memory, model_path)
        if analysis["flash_bytes"] != ir_flash:
            analysis["ir_flash_bytes"] = ir_flash
    if memory.persistent == "tflm":
        tail = tflm_tail_bytes(graph)
        analysis["persistent_bytes"] = tail["total"]
        analysis["persistent_parts"] = {k: v for k, v in tail.items() if k != "total"}
        analysis["arena_total_bytes"] = analysis["arena_bytes"] + tail["total"]
