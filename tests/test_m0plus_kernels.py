"""The Armv6-M kernels (Cortex-M0+, the SAMD21's core: no DSP, no SSAT, no 64-bit multiply instruction): the
generated firmware built for `cortex_m0plus` and run on qemu equals the NumPy oracle bit for bit under both
roundings, over layers that take every path of those kernels — odd channel counts (the 4/2/1 output-channel
blocks and the 4/1 output-column blocks), stride 2, depthwise 3x3 / 5x5 / 7x7, pointwise, im2col convolution,
fully connected, residual add and pooling — and its object code holds no DSP instruction."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from tinyflow.deployment import Deployment
from tinyflow.device import Device
from tinyflow.firmware import build
from tinyflow.firmware.project import FirmwareSettings, make_firmware
from tinyflow.ir.onnx_import import from_onnx
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan

needs_toolchain = pytest.mark.skipif(bool(build.missing_tools()), reason="arm-none-eabi-gcc / qemu not installed")
BOARD = Device("m0plus-board", 4096, 4096, "cortex_m0plus", 48)  # the M0+ core, room for any test model
KERNELS = REPO / "src" / "tinyflow" / "firmware" / "templates" / "tf_kernels.h"
# Armv7E-M / Armv7-M instructions an Armv6-M build must not contain (the DSP and saturation extensions, long
# multiplies, Thumb-2 wide encodings' mnemonics the M0+ lacks)
NOT_ARMV6M = ("smlad", "smlabb", "smmul", "smmulr", "sxtb16", "ssat", "usat", "smull", "umull", "smlal", "sdiv", "udiv")


def _net(torch, cin: int = 3):
    nn = torch.nn

    class Net(nn.Module):
        """Every Armv6-M kernel path: odd channels (7, 13, 5), stride 2, depthwise 3/5/7, an add, pools, a dense
        layer on the pooled map (no global pool, so the outputs depend on the input: the checks have power)."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(cin, 7, 3, 2, 1), nn.ReLU())  # im2col, stride 2, cout 7 = 4+2+1
            self.dw3 = nn.Sequential(nn.Conv2d(7, 7, 3, 1, 1, groups=7), nn.ReLU())
            self.pw1 = nn.Conv2d(7, 13, 1)  # cin 7 (n % 4 = 3), cout 13 = 3 blocks of 4 + 1
            self.dw5 = nn.Sequential(nn.Conv2d(13, 13, 5, 2, 2, groups=13), nn.ReLU())  # stride 2
            self.pw2 = nn.Sequential(nn.Conv2d(13, 13, 1), nn.ReLU6())
            self.dw7 = nn.Conv2d(13, 13, 7, 1, 3, groups=13)
            self.pw3 = nn.Conv2d(13, 6, 1)  # cout 6 = 4 + 2, cin 13 (n % 4 = 1)
            self.pw4 = nn.Conv2d(13, 6, 1)
            self.conv = nn.Sequential(nn.Conv2d(6, 5, 3, 1, 1), nn.ReLU())  # im2col row 54 (n % 4 = 2)
            self.maxpool = nn.MaxPool2d(2)
            self.avgpool = nn.AvgPool2d(2, 1)
            self.fc = nn.Linear(10, 7)  # n = 10 (n % 4 = 2), 7 outputs

        def forward(self, x):
            x = self.dw3(self.stem(x))
            x = self.dw5(self.pw1(x))
            y = self.dw7(self.pw2(x))
            x = self.pw3(y) + self.pw4(x)  # residual add
            x = self.conv(x)
            x = self.avgpool(self.maxpool(x))  # 5x6 -> 2x3 -> 1x2: the outputs keep where in the image
            return self.fc(torch.flatten(x, 1))

    net = Net().eval()
    for m in net.modules():  # He-normal weights, small biases: the signal (not the biases) reaches the output
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.uniform_(m.bias, -0.1, 0.1)
    return net


@pytest.fixture(scope="module")
def m0_model(tmp_path_factory):
    """The test network (random weights, seed 0), 20x22 input (odd output widths), quantized to int8 by
    onnxruntime (per-channel weights, calibrated on random images)."""
    torch = pytest.importorskip("torch")
    from tinyflow.deploy.onnx_export import export_onnx
    from tinyflow.deploy.quantize import quantize_int8

    work = tmp_path_factory.mktemp("m0plus")
    torch.manual_seed(0)
    net = _net(torch)
    shape = (1, 3, 20, 22)
    export_onnx(net, shape, work / "float.onnx")
    calib = np.random.default_rng(0).standard_normal((16, *shape[1:])).astype(np.float32)
    path = quantize_int8(work / "float.onnx", work / "int8.onnx", calib)
    return path, np.random.default_rng(1).standard_normal((6, *shape[1:])).astype(np.float32)


def _firmware(path: Path, images: np.ndarray, out: Path, **settings) -> dict:
    graph = from_onnx(path)
    deployment = Deployment(graph, layer_plan(graph, MemoryConfig()), {}, model_path=str(path), source="int8 file")
    return make_firmware(deployment, BOARD, out, images, FirmwareSettings(images=len(images), **settings))


def test_the_model_takes_every_kernel(m0_model) -> None:
    from tinyflow.firmware.qmodel import build_qmodel

    kinds = [layer.kind for layer in build_qmodel(from_onnx(m0_model[0])).layers]
    for kind in ("conv", "depthwise", "pointwise", "add", "maxpool", "avgpool", "linear"):
        assert kind in kinds, kinds


@needs_toolchain
@pytest.mark.parametrize("rounding", ["single", "tflite"])
def test_m0plus_firmware_is_bit_exact(m0_model, rounding, tmp_path) -> None:
    """Built for the Cortex-M0+ (-mcpu=cortex-m0plus, run on the M3 board): every output equals the oracle's."""
    path, images = m0_model
    fw = _firmware(path, images, tmp_path, rounding=rounding)
    assert fw["target"] == "cortex_m0plus" and "-mcpu=cortex-m0plus" in fw["cpu_flags"]
    assert fw["bit_exact"] == fw["images"] == len(images), fw.get("failed_checks")
    assert fw["instructions_per_inference"] > fw["macs"]


@needs_toolchain
@pytest.mark.parametrize("opt", ["-Os", "-O0"])
def test_m0plus_other_optimisation_levels_are_bit_exact(m0_model, opt, tmp_path) -> None:
    """-Os takes the same assembly loops; -O0 (the frame pointer holds r7) the plain-C Armv6-M paths."""
    path, images = m0_model
    fw = _firmware(path, images[:2], tmp_path, rounding="tflite", opt=opt)
    assert fw["bit_exact"] == fw["images"] == 2


def _altered(original):
    """`build_qmodel` with activation bounds inside the int8 range on every other weighted layer (lo = zp + 3,
    hi = 100: the output stage's clamp, its + lo, a lower bound above the zero point) and the general
    requantization on the rest (the same real multiplier as m >> -shift with shift 0: rq = 0)."""

    def build(graph):
        model = original(graph)
        layers = [la for la in model.layers if "weight" in la.p and isinstance(la.p.get("mult"), np.ndarray)]
        for i, layer in enumerate(layers):
            p = layer.p
            if i % 2 == 0:
                p["act_min"], p["act_max"] = min(int(p["zp_out"]) + 3, 90), 100
            else:
                p["mult"] = (p["mult"].astype(np.int64) >> np.maximum(-p["shift"], 0)).astype(p["mult"].dtype)
                p["shift"] = np.maximum(p["shift"], 0).astype(p["shift"].dtype)
        return model

    return build


@needs_toolchain
@pytest.mark.parametrize("rounding", ["single", "tflite"])
def test_m0plus_activation_bounds_and_general_requantization(m0_model, rounding, tmp_path, monkeypatch) -> None:
    """Activation bounds inside the int8 range and layers that take the general requantization, on the integer
    model the firmware and the oracle both use; the outputs differ from image to image (the check has power)."""
    import tinyflow.firmware.project as project
    from tinyflow.firmware.codegen import rq_mode
    from tinyflow.firmware.oracle import run_oracle
    from tinyflow.firmware.qmodel import build_qmodel

    path, images = m0_model
    model = _altered(build_qmodel)(from_onnx(path))
    model.set_rounding(rounding)
    assert {rq_mode(la) for la in model.layers if "weight" in la.p} == {0, 1}
    ref = np.asarray(run_oracle(model, model.quantize_input(images))).reshape(len(images), -1)
    assert len({tuple(r) for r in ref}) == len(images), "the altered model's outputs do not depend on its input"
    monkeypatch.setattr(project, "build_qmodel", _altered(project.build_qmodel))
    fw = _firmware(path, images, tmp_path, rounding=rounding)
    assert fw["bit_exact"] == fw["images"] == len(images), fw.get("failed_checks")


@needs_toolchain
def test_m0plus_object_code_has_no_dsp_instructions(m0_model, tmp_path) -> None:
    """The model's object code is Armv6-M: none of the DSP / saturation / long-multiply instructions, and the
    pointwise loops' multiply-accumulate is MULS (the kernels' own Armv6-M loops, not the M7 loop compiled down)."""
    path, images = m0_model
    fw = _firmware(path, images[:1], tmp_path)
    objdump = shutil.which("arm-none-eabi-objdump")
    if objdump is None:
        pytest.skip("arm-none-eabi-objdump not installed")
    obj = next(Path(fw["project_dir"]).rglob("model.o"), None) or Path(fw["project_dir"]) / "firmware.elf"
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(obj)], capture_output=True, text=True).stdout
    mnemonics = {m.group(1) for m in re.finditer(r"^\s+[0-9a-f]+:\s+([a-z0-9.]+)", text, re.M)}
    assert mnemonics and not mnemonics & set(NOT_ARMV6M), sorted(mnemonics & set(NOT_ARMV6M))
    assert not any(m.endswith(".w") for m in mnemonics), "a 32-bit Thumb-2 encoding in Armv6-M code"
    assert "muls" in mnemonics and "ldrsb" in mnemonics and "ldrb" in mnemonics


@pytest.mark.slow
@needs_toolchain
@pytest.mark.parametrize("name", ["kws_ref_model", "resnet8_32"])
def test_m0plus_firmware_equals_tflite_micro(name, tmp_path) -> None:
    """Published models built for the Cortex-M0+ under rounding=tflite: every output equals TF Lite Micro's."""
    from tinyflow.firmware.emulator import read_outputs
    from tinyflow.firmware.qmodel import build_qmodel
    from tinyflow.firmware.tflm_reference import tflm_available, tflm_outputs
    from tinyflow.ir import import_model

    if not tflm_available():
        pytest.skip("the tflite-micro wheel is not importable")
    path = REPO / "tests" / "data" / "models" / f"{name}.tflite"
    model = build_qmodel(import_model(path))
    n = 10
    q = np.random.default_rng(0).integers(-128, 128, (n, *model.input_shape[1:]))
    x = ((q - model.input_zp) * np.float32(model.input_scale)).astype(np.float32)
    dep = Deployment(model.graph, layer_plan(model.graph, MemoryConfig()), {}, model_path=str(path), source="int8")
    fw = make_firmware(dep, BOARD, tmp_path, x, FirmwareSettings(images=n, rounding="tflite"))
    assert fw["target"] == "cortex_m0plus" and fw["bit_exact"] == n
    ours = read_outputs(fw["project_dir"]).astype(np.int32)
    theirs = tflm_outputs(path, model.quantize_input(x)).reshape(n, -1).astype(np.int32)
    assert (ours == theirs).all()


HMUL_TEST = r"""
#include <stdint.h>
#include <stdio.h>
#include "tf_kernels.h"
int main(void) {
    uint64_t s = 88172645463325252ull;
    long bad = 0;
    for (long i = 0; i < 4000000; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        int32_t acc = (int32_t)(s % 2147483647u) - 1073741823, m = (int32_t)((s >> 31) % 1073741824u) + 1073741824;
        if (i % 4 == 1) acc = (int32_t)(s % 131072u) - 65536;
        if (i == 0) acc = -1073741823, m = 2147483647;
        if (i == 1) acc = 1073741823, m = 1073741824;
        for (int32_t c = 0; c < 2; c++) {
            int64_t want = ((int64_t)acc * m + (c ? (INT64_C(1) << 30) : 0)) >> 31;
            if (tf_hmul31(acc, m, c << 14) != (int32_t)want) bad++;
        }
    }
    printf("%ld\n", bad);
    return bad != 0;
}
"""


def test_hmul31_is_the_64_bit_product(tmp_path) -> None:
    """The Armv6-M high multiply in 32-bit arithmetic (`tf_hmul31`, compiled for the host with the Armv6-M
    macro set: its plain-C path) equals floor((acc*m + c) / 2^31) on 8 M random and boundary operands."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no host C compiler")
    (tmp_path / "t.c").write_text(HMUL_TEST)
    exe = tmp_path / "t"
    flags = ["-O1", "-std=c99", "-D__ARM_ARCH_6M__=1", f"-I{KERNELS.parent}"]
    res = subprocess.run([cc, *flags, str(tmp_path / "t.c"), "-o", str(exe)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "0", run.stdout


@needs_toolchain
def test_im2col_row_padding_is_chosen_by_the_devices_flash(m0_model, tmp_path) -> None:
    """Issue 23: the padded im2col rows (27 -> 28 and 54 -> 56: 7 + 10 = 17 B of weights) are a per-model layout
    the generator keeps only when the device's flash has room. With room: kept, and the report says what it cost.
    Short of flash: the unpadded rows are built too and kept when they link (bit-exact); when neither links, the
    smaller overflow is reported."""
    global BOARD
    from tinyflow.firmware.codegen import row_padding_bytes
    from tinyflow.firmware.qmodel import build_qmodel
    from tinyflow.firmware.report_rows import firmware_rows

    path, images = m0_model
    assert row_padding_bytes(build_qmodel(from_onnx(path))) == 17

    def build_for(flash_bytes: float, name: str) -> dict:
        global BOARD
        board, BOARD = BOARD, Device(name, 4096, flash_bytes / 1024, "cortex_m7", 216)
        try:
            return _firmware(path, images[:2], tmp_path / name, target="cortex_m7", on_overflow="report")
        finally:
            BOARD = board

    def padding_row(fw: dict) -> tuple:
        return next(r for r in firmware_rows(fw, None, None) if r[0] == "im2col row padding")

    roomy = build_for(4096 * 1024, "roomy")
    assert roomy["row_padding"] == {"bytes": 17, "kept": True} and roomy["fits"]
    assert padding_row(roomy)[1:] == ("+17 B flash", "kept: the device's flash has room")
    small = roomy["flash_bytes"] // 2  # neither build links: both overflows are measured
    short = build_for(small, "short")
    pad = short["row_padding"]
    over_with, over_without = pad["padded_over"], pad["unpadded_over"]
    assert short["fits"] is False and short["overflow_bytes"] == min(over_with, over_without)
    assert pad["kept"] == (over_with <= over_without) and "neither links" in padding_row(short)[2]
    if over_without < over_with:  # room for the unpadded build only: it is chosen, links and is bit-exact
        between = build_for(small + (over_with + over_without) // 2, "between")
        assert between["row_padding"]["kept"] is False and between["fits"], between["row_padding"]
        assert between["bit_exact"] == 2 and padding_row(between)[1] == "dropped"
    else:  # room for the padded build only: it is kept and links
        between = build_for(small + (over_with + over_without) // 2, "between")
        assert between["row_padding"]["kept"] is True and between["fits"] and between["bit_exact"] == 2
