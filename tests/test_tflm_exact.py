"""Under `firmware.rounding=tflite` the integer model equals TF Lite Micro's interpreter on every output.

100 random int8 inputs per `.tflite` model: the NumPy oracle against the `tflite-micro` wheel (what the firmware
must equal bit for bit); one slow test runs the firmware of ResNet-8 on qemu and compares its outputs with TF Lite
Micro's. The layers that used to differ: TF Lite's integer MEAN (`QuantizedMeanOrSum`, imported as
global_avgpool) and its int8 average pool (a rounded integer division).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from tinyflow.device import Device
from tinyflow.firmware.emulator import read_outputs
from tinyflow.firmware.fixedpoint import quantize_multiplier, requantize
from tinyflow.firmware.lowering import mean_multiplier
from tinyflow.firmware.oracle import round_div, run_oracle
from tinyflow.firmware.qmodel import build_qmodel, to_nhwc
from tinyflow.firmware.tflm_reference import tflm_available, tflm_outputs
from tinyflow.ir import import_model

pytestmark = pytest.mark.skipif(not tflm_available(), reason="the tflite-micro wheel is not importable")

MODELS = REPO / "tests" / "data" / "models"
FAST = ["resnet8_32", "mobilenet_v1_025_96", "pads", "ad01_int8"]
SLOW = ["kws_ref_model", "person_detect"]
N = 100


def _inputs(model, n: int = N) -> np.ndarray:
    """n random int8 NHWC inputs (seed 0)."""
    q = np.random.default_rng(0).integers(-128, 128, (n, *model.input_shape[1:])).astype(np.int8)
    return to_nhwc(q)


def _oracle_vs_tflm(name: str) -> tuple[int, int]:
    """(equal outputs, max |difference| in int8 steps) of the oracle against TF Lite Micro on N inputs."""
    path = MODELS / f"{name}.tflite"
    model = build_qmodel(import_model(path))
    model.set_rounding("tflite")
    x = _inputs(model)
    ours = np.asarray(run_oracle(model, x)).reshape(N, -1).astype(np.int32)
    theirs = tflm_outputs(path, x).reshape(N, -1).astype(np.int32)
    return int((ours == theirs).all(axis=1).sum()), int(np.abs(ours - theirs).max())


@pytest.mark.parametrize("name", FAST)
def test_oracle_equals_tflm(name):
    assert _oracle_vs_tflm(name) == (N, 0)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_oracle_equals_tflm_large(name):
    assert _oracle_vs_tflm(name) == (N, 0)


def test_mean_multiplier_is_tflites_integer_mean():
    """QuantizedMeanOrSum's constants: the ratio's multiplier scaled by 2^k / n, k = floor(log2 n) capped."""
    m0, s0 = quantize_multiplier(0.029020050540566444 / 0.00633082864806056)
    assert (m0 >> 30, s0) == (1, 3)  # 4.58 = 0.573 · 2^3
    assert mean_multiplier(0.029020050540566444, 0.00633082864806056, 9) == ((m0 << 3) // 9, 0)  # k = 3
    m, s = mean_multiplier(0.029020050540566444, 0.00633082864806056, 64)
    assert (m, s) == (m0, -3)  # k = 6: 2^6 / 64 = 1
    sums = np.arange(-64 * 256, 64 * 256, 37)
    want = np.rint(sums * 0.029020050540566444 / 0.00633082864806056 / 64)
    assert np.abs(requantize(sums, m, s) - want).max() <= 1


def test_round_div_is_c_division_half_away_from_zero():
    acc = np.array([-7, -6, -5, -4, -1, 0, 1, 4, 5, 6, 7])
    assert round_div(acc, np.full_like(acc, 4)).tolist() == [-2, -2, -1, -1, 0, 0, 0, 1, 1, 2, 2]


@pytest.mark.slow
def test_resnet8_firmware_equals_tflm(tmp_path: Path):
    """The firmware on qemu (Cortex-M7) under rounding=tflite: 100/100 outputs equal TF Lite Micro's."""
    from tinyflow.deployment import Deployment
    from tinyflow.firmware.project import FirmwareSettings, make_firmware
    from tinyflow.memory.config import MemoryConfig
    from tinyflow.memory.layer_plan import layer_plan

    path = MODELS / "resnet8_32.tflite"
    model = build_qmodel(import_model(path))
    plan = layer_plan(model.graph, MemoryConfig())
    q = np.random.default_rng(0).integers(-128, 128, (N, *model.input_shape[1:]))
    x = ((q - model.input_zp) * np.float32(model.input_scale)).astype(np.float32)
    dep = Deployment(model.graph, plan, {}, model_path=str(path), source="int8 model file")
    device = Device("stm32f746", 320, 1024, "cortex_m7", 216)
    fw = make_firmware(dep, device, tmp_path, x, FirmwareSettings(rounding="tflite"))
    assert fw["bit_exact"] == N
    ours = read_outputs(fw["project_dir"]).astype(np.int32)
    theirs = tflm_outputs(path, model.quantize_input(x)).reshape(N, -1).astype(np.int32)
    assert (ours == theirs).all()
