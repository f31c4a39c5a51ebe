"""README's firmware table of the published models: each model built and run on qemu with TF Lite rounding on the
Cortex-M7 and M4 and with single rounding on the M7, 100 seeded random int8 inputs, compared with the oracle,
onnxruntime and TF Lite Micro's interpreter on the same inputs.

    .venv/bin/python benchmarks/firmware_models_table.py person_detect kws_ref_model ad01_int8

Prints one JSON line per model; the last line in the benchmarks' form.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tinyflow.firmware.emulator import read_outputs
from tinyflow.firmware.tflm_reference import tflm_outputs

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "tests" / "data" / "models"  # the published models of ../shared/models


def firmware(model: str, *overrides: str) -> dict:
    cmd = [sys.executable, "-m", "tinyflow.firmware", f"network.path={MODELS / model}.onnx", "firmware.images=100"]
    cmd += ["tracking=none", "output=json", "device=stm32f746", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, check=False)
    if res.returncode:
        raise SystemExit(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def versus_tflm(model: str, fw: dict) -> tuple[int, int]:
    """(max |difference| in int8 steps, outputs equal) of a firmware run against TF Lite Micro."""
    x = np.fromfile(Path(fw["project_dir"]) / "run_firmware" / "images.bin", np.int8)[4:].reshape(fw["images"], -1)
    ours = read_outputs(fw["project_dir"]).astype(int)
    theirs = tflm_outputs(MODELS / f"{model}.tflite", x).reshape(len(x), -1).astype(int)
    diff = np.abs(ours - theirs)
    return int(diff.max()), int((diff == 0).all(axis=1).sum())


def main(models: list[str]) -> None:
    worst = 0
    for m in models:
        t7 = firmware(m, "firmware.rounding=tflite", "firmware.target=cortex_m7")
        t4 = firmware(m, "firmware.rounding=tflite", "firmware.target=cortex_m4")
        s7 = firmware(m, "firmware.rounding=single", "firmware.target=cortex_m7")
        tflite_vs, single_vs = versus_tflm(m, t7), versus_tflm(m, s7)
        worst = max(worst, tflite_vs[0])
        row = {
            "arena": t7["arena_bytes"],
            "sram": t7["sram_bytes"],
            "flash": t7["text_bytes"] + t7["rodata_bytes"],
            "bit_exact (M7 tflite, M4 tflite, M7 single)": [t7["bit_exact"], t4["bit_exact"], s7["bit_exact"]],
            "images": t7["images"],
            "tflite vs TFLM (max steps, equal)": tflite_vs,
            "single vs TFLM (max steps, equal)": single_vs,
            "single vs onnxruntime (top-1, max steps)": [
                s7.get("top1_agreement_onnxruntime"),
                s7.get("max_diff_steps_onnxruntime"),
            ],
            "instructions (M7 tflite, M7 single)": [t7["instructions_per_inference"], s7["instructions_per_inference"]],
            "per MAC (M7 tflite, M4 tflite)": [
                round(t7["instructions_per_mac"], 2),
                round(t4["instructions_per_mac"], 2),
            ],
        }
        print(m, json.dumps(row))
    print(f"max steps from TF Lite Micro under tflite rounding: {worst} steps")


if __name__ == "__main__":
    main(sys.argv[1:] or ["person_detect", "kws_ref_model", "ad01_int8"])
