"""Firmware lowered from the IR on the published int8 models (issue 21): `.tflite` and its `.onnx` twin give the
same integer model (oracle outputs equal on the same int8 inputs) and, on qemu, the same firmware outputs; the
app takes `.tflite`; nothing in the firmware reads the model file for weights; the reference check is reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, cli_env
from tinyflow.firmware import build
from tinyflow.firmware.emulator import read_outputs
from tinyflow.firmware.oracle import run_oracle
from tinyflow.firmware.qmodel import build_qmodel, to_nhwc
from tinyflow.ir.onnx_import import from_onnx
from tinyflow.ir.tflite_import import from_tflite

MODELS = REPO / "tests" / "data" / "models"  # the published models of ../shared/models, kept in the repo
NAMES = ("person_detect", "kws_ref_model", "ad01_int8")
IMAGES = 8
needs_models = pytest.mark.skipif(not (MODELS / "kws_ref_model.tflite").is_file(), reason="tests/data/models absent")
needs_toolchain = pytest.mark.skipif(bool(build.missing_tools()), reason="arm-none-eabi-gcc / qemu not installed")


def _int8_inputs(model, n: int, seed: int = 0) -> np.ndarray:
    q = np.random.default_rng(seed).integers(-128, 128, (n, *model.input_shape[1:])).astype(np.int8)
    return to_nhwc(q)


@needs_models
@pytest.mark.parametrize("name", NAMES)
def test_tflite_and_onnx_lower_to_the_same_integer_model(name: str, monkeypatch) -> None:
    """Lowering reads the graph only (opening a model file would fail here); the oracle gives the same int8
    outputs for the .tflite and the .onnx twin on the same int8 inputs."""
    t, o = from_tflite(MODELS / f"{name}.tflite"), from_onnx(MODELS / f"{name}.onnx")
    import onnx

    def refuse(*_a, **_k):
        raise AssertionError("the firmware read a model file")

    monkeypatch.setattr(onnx, "load", refuse)
    a, b = build_qmodel(t), build_qmodel(o)
    assert [la.kind for la in a.layers] == [lb.kind for lb in b.layers]
    assert (a.input_scale, a.input_zp, a.output_scale, a.output_zp) == (
        b.input_scale,
        b.input_zp,
        b.output_scale,
        b.output_zp,
    )
    assert a.int8_io == b.int8_io == (True, True)
    x = _int8_inputs(a, 16)
    assert np.array_equal(run_oracle(a, x), run_oracle(b, x))


def test_firmware_sources_name_no_file_walk() -> None:
    """No second walk of the ONNX file, no sidecar lookup (issue 21's grep)."""
    for path in (REPO / "src" / "tinyflow" / "firmware").rglob("*.py"):
        text = path.read_text()
        assert "_Onnx" not in text and "analysis.json" not in text, path


@needs_models
def test_reference_check_not_run_is_in_the_result(tmp_path) -> None:
    """A .tflite without an .onnx twin (and no TF Lite Micro here) has no reference: said, with why."""
    import shutil

    from tinyflow.firmware.project import reference_outputs
    from tinyflow.firmware.tflm_reference import tflm_available

    alone = tmp_path / "kws.tflite"
    shutil.copy(MODELS / "kws_ref_model.tflite", alone)
    model = build_qmodel(from_tflite(alone))
    images = np.zeros((2, *model.input_shape[1:]), np.float32)
    out, check = reference_outputs(str(alone), images, model)
    if not tflm_available():
        assert out is None and check.startswith("not run:") and "no .onnx twin" in check
    out, check = reference_outputs(
        str(MODELS / "person_detect.onnx"),
        np.zeros((2, 1, 96, 96), np.float32),
        build_qmodel(from_onnx(MODELS / "person_detect.onnx")),
    )
    assert out is not None and out.shape == (2, 2) and check == "onnxruntime (person_detect.onnx)"


def test_a_foreign_firmware_folder_is_never_deleted(tmp_path) -> None:
    from tinyflow.firmware.project import MARKER, project_folder

    (tmp_path / "firmware").mkdir()
    (tmp_path / "firmware" / "mine.c").write_text("int x;")
    folder = project_folder(tmp_path)
    assert folder == tmp_path / "firmware-2" and (tmp_path / "firmware" / "mine.c").is_file()
    folder.mkdir()
    (folder / MARKER).write_text("")
    assert project_folder(tmp_path) == folder and not folder.exists()  # tinyflow's own: replaced


def _cli(path: Path, run_dir: Path) -> dict:
    network = "tflite" if path.suffix == ".tflite" else "onnx"
    cmd = [sys.executable, "-m", "tinyflow.firmware", f"network={network}", f"network.path={path}", "output=json"]
    cmd += ["tracking=none", f"firmware.images={IMAGES}", f"hydra.run.dir={run_dir}"]
    res = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def _outputs(fw: dict) -> np.ndarray:
    return read_outputs(fw["project_dir"])


@pytest.mark.slow
@needs_models
@needs_toolchain
@pytest.mark.parametrize("name", NAMES)
def test_firmware_app_on_tflite_equals_its_onnx_twin(name: str, tmp_path) -> None:
    """`python -m tinyflow.firmware network=tflite network.path=<model>.tflite output=json`: exit 0, the arena,
    instructions, every image bit-exact; the `.onnx` twin's firmware gives the same outputs; the Deployment saved."""
    fw_t = _cli(MODELS / f"{name}.tflite", tmp_path / "t")
    fw_o = _cli(MODELS / f"{name}.onnx", tmp_path / "o")
    summary = {k: fw_t[k] for k in ("arena_bytes", "instructions_per_inference", "bit_exact", "reference_check")}
    print(name, json.dumps(summary))
    for fw in (fw_t, fw_o):
        assert fw["images"] == fw["bit_exact"] == IMAGES and fw["arena_bytes"] > 0
        assert fw["instructions_per_inference"] > fw["macs"]
        assert fw["reference_check"].startswith("onnxruntime") and fw["max_diff_steps_onnxruntime"] <= 1
    assert fw_t["arena_bytes"] == fw_o["arena_bytes"]
    assert np.array_equal(_outputs(fw_t), _outputs(fw_o))
    assert (tmp_path / "t" / "deployment.npz").is_file()


@needs_models
@needs_toolchain
def test_fixed_batch_model_runs_its_reference_comparison(tmp_path) -> None:
    """person_detect.onnx has its batch fixed at 1: onnxruntime runs image by image, and a comparison that could
    not run would be a failed check in the result (and so in the report and report.json), not a log line."""
    from tinyflow.deployment import Deployment
    from tinyflow.device import Device
    from tinyflow.firmware.project import FirmwareSettings, make_firmware
    from tinyflow.memory.config import MemoryConfig
    from tinyflow.memory.layer_plan import layer_plan

    path = MODELS / "person_detect.onnx"
    graph = from_onnx(path)
    dep = Deployment(graph, layer_plan(graph, MemoryConfig()), {}, model_path=str(path), source="int8 model file")
    model = build_qmodel(graph)
    q = np.random.default_rng(0).integers(-128, 128, (3, *model.input_shape[1:]))  # NCHW
    images = ((q - model.input_zp) * np.float32(model.input_scale)).astype(np.float32)
    board = Device("board", 512, 2048, "cortex_m7", 216)
    fw = make_firmware(dep, board, tmp_path, images, FirmwareSettings(images=3))
    assert fw["reference_check"] == "onnxruntime (person_detect.onnx)", fw["reference_check"]
    assert fw["failed_checks"] == [] and fw["bit_exact"] == 3 and fw["max_diff_steps_onnxruntime"] <= 1
