"""TFLite TRANSPOSE (issue 22): a leading NCHW->NHWC TRANSPOSE is folded into the input layout; a mid-graph one is a
real `transpose` node, never dropped. Fixtures: tests/data/models/make_transpose_models.py (TensorFlow, side env);
checked against TF Lite Micro (the `tflite-micro` wheel) on 100 random inputs, oracle and firmware."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO
from tinyflow.deployment import Deployment
from tinyflow.device import Device
from tinyflow.firmware import build
from tinyflow.firmware.oracle import run_oracle
from tinyflow.firmware.project import FirmwareSettings, make_firmware
from tinyflow.firmware.qmodel import build_qmodel
from tinyflow.firmware.tflm_reference import tflm_available, tflm_outputs
from tinyflow.ir.tflite_import import from_tflite
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan

DATA = REPO / "tests" / "data" / "models"
needs_tflm = pytest.mark.skipif(not tflm_available(), reason="tflite-micro not installed")
needs_toolchain = pytest.mark.skipif(bool(build.missing_tools()), reason="arm-none-eabi-gcc / qemu not installed")
N = 100


def _images(model, n: int = N) -> np.ndarray:
    q = np.random.default_rng(0).integers(-128, 128, size=(n, *model.input_shape[1:]))
    return ((q - model.input_zp) * np.float32(model.input_scale)).astype(np.float32)


def _tflm_input(graph, model, x: np.ndarray) -> np.ndarray:
    return model.quantize_nchw(x) if graph.meta.get("input_layout") == "NCHW" else model.quantize_input(x)


def test_leading_transpose_is_folded_into_the_input() -> None:
    g = from_tflite(DATA / "leading_transpose.tflite")
    assert g.meta["input_layout"] == "NCHW" and g[g.inputs[0]].shape == (1, 3, 32, 32)
    assert not any(n.op == "transpose" for n in g)


def test_mid_graph_transpose_is_a_node() -> None:
    g = from_tflite(DATA / "kws_transpose.tflite")
    (tr,) = [n for n in g if n.op == "transpose"]
    assert tuple(tr.attrs["perm"]) == (0, 3, 1, 2) and tr.shape == (1, 5, 8, 25)


@needs_tflm
@pytest.mark.parametrize("name", ["leading_transpose", "kws_transpose"])
def test_oracle_equals_tflm(name: str) -> None:
    """TF Lite's double rounding: the integer oracle equals TF Lite Micro on all 100 random inputs."""
    path = DATA / f"{name}.tflite"
    g = from_tflite(path)
    model = build_qmodel(g)
    model.set_rounding("tflite")
    x = _images(model)
    ours = run_oracle(model, model.quantize_input(x)).reshape(N, -1).astype(int)
    theirs = tflm_outputs(path, _tflm_input(g, model, x)).reshape(N, -1).astype(int)
    assert np.abs(ours - theirs).max() == 0


@needs_tflm
@needs_toolchain
@pytest.mark.parametrize("name", ["leading_transpose", "kws_transpose"])
def test_firmware_equals_tflm(name: str, tmp_path) -> None:
    """The firmware (Cortex-M4, qemu mps2-an386) against TF Lite Micro: 0 int8 steps on 100 inputs."""
    path = DATA / f"{name}.tflite"
    g = from_tflite(path)
    model = build_qmodel(g)
    dep = Deployment(g, layer_plan(g, MemoryConfig()), {}, model_path=str(path), source="int8 model file")
    device = Device("nrf52840", 256, 1024, "cortex_m4", 64)
    fw = make_firmware(dep, device, tmp_path, _images(model), FirmwareSettings(rounding="tflite"))
    assert fw["reference_check"].startswith("TF Lite Micro") and fw["failed_checks"] == []
    assert fw["bit_exact"] == N and fw["max_diff_steps_tflm"] == 0 and fw["top1_agreement_tflm"] == 1.0
