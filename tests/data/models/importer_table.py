"""The importer table: per .tflite, the layer-by-layer peak, tinyflow's memory=tflm arena, TF Lite Micro's measured
head, and the lowest-peak patch plan within a recomputation budget (MCUNetV2), with its extra MACs:

    .venv/bin/python tests/data/models/importer_table.py [--tflm-python /work/tfenv/bin/python] a.tflite ...

`--tflm-python` is a Python with the tflite-micro wheel (measure_tflm.py runs in it); without it that column is
left empty.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from tinyflow.errors import ConfigError
from tinyflow.ir import from_onnx, from_tflite
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan
from tinyflow.memory.patch_plan import patch_plan
from tinyflow.memory.receptive_field import max_patch_blocks

TFLM = MemoryConfig(  # conf/memory/tflm.yaml
    inplace_depthwise=False,
    inplace_elementwise=False,
    arena_algorithm="tflm_greedy",
    alignment=16,
    fold_pads=False,
    convention="tflm",
)


def best_patch(graph, max_extra: float) -> tuple[int, int, int, float] | None:  # type: ignore[no-untyped-def]
    """(peak, patch_blocks, n_patches, extra MAC ratio) of the lowest-peak patch plan within `max_extra`."""
    best = None
    for pb in range(1, max_patch_blocks(graph) + 1):
        for n in range(2, 9):
            try:
                p = patch_plan(graph, MemoryConfig(), pb, n, check=False, placement=False)
            except ConfigError:
                continue
            r = p.extra["extra_macs_ratio"]
            if r <= max_extra and (best is None or (p.peak_live_bytes, r) < (best[0], best[3])):
                best = (p.peak_live_bytes, pb, n, r)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--tflm-python", default=None)
    ap.add_argument("--max-extra-macs", type=float, default=0.5)
    args = ap.parse_args()
    here = Path(__file__).resolve().parent
    print(
        "| model | ops | layer peak (B) | same IR from .onnx | memory=tflm arena (B) | TFLM head, measured (B) "
        "| patch peak (B) | patch_blocks × n | extra MACs |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for path in args.models:
        g = from_tflite(path)
        onnx = Path(path).with_suffix(".onnx")
        same = "-"
        if onnx.is_file():
            go = from_onnx(onnx)
            same = "yes" if [(n.op, n.shape, n.block) for n in g] == [(n.op, n.shape, n.block) for n in go] else "NO"
        head = ""
        if args.tflm_python:
            out = subprocess.run(
                [args.tflm_python, str(here / "measure_tflm.py"), path], capture_output=True, text=True, check=True
            ).stdout
            head = f"{int(out.split('head ')[1].split()[0]):,}"
        best = best_patch(g, args.max_extra_macs)
        layer_peak = layer_plan(g, MemoryConfig()).peak_live_bytes
        patch = f"{best[0]:,} | {best[1]} × {best[2]} | {best[3]:.1%}" if best else "— | — | —"
        if best and best[0] >= layer_peak:
            patch = "none below layer | — | —"
        print(
            f"| {Path(path).stem} | {len(g) - 1} | {layer_peak:,} | {same} | "
            f"{layer_plan(g, TFLM).arena_bytes:,} | {head} | {patch} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
