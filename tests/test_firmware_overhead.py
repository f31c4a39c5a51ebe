"""Issue 22: SRAM = arena + the firmware's own needs (predicted from the IR, measured on the build), the device's own
core, a core with no toolchain (not built: a failed check), the report's "fits" = the linker's verdict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, cli_env
from tinyflow.deployment import Deployment, plan_deployment
from tinyflow.device import Device
from tinyflow.firmware import build, linker
from tinyflow.firmware.codegen import generate
from tinyflow.firmware.project import FirmwareSettings, failed_checks, make_firmware
from tinyflow.firmware.qmodel import build_qmodel
from tinyflow.ir.onnx_import import from_onnx
from tinyflow.ir.tflite_import import from_tflite
from tinyflow.memory import runtime_overhead
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan
from tinyflow.report import Figures, rows

DATA = REPO / "tests" / "data" / "models"
needs_toolchain = pytest.mark.skipif(bool(build.missing_tools()), reason="arm-none-eabi-gcc / qemu not installed")
SAMD21 = Device("samd21", 32, 256, "cortex_m0plus", 48)


def _images(model, n: int) -> np.ndarray:
    q = np.random.default_rng(0).integers(-128, 128, size=(n, *model.input_shape[1:]))
    return ((q - model.input_zp) * np.float32(model.input_scale)).astype(np.float32)


def _deployment(path: Path) -> Deployment:
    graph = from_onnx(path) if path.suffix == ".onnx" else from_tflite(path)
    return Deployment(graph, layer_plan(graph, MemoryConfig()), {}, model_path=str(path), source="int8 model file")


@pytest.mark.parametrize("name", ["kws_ref_model.onnx", "resnet8_32.onnx", "kws_transpose.tflite"])
def test_predicted_scratch_and_io_are_the_generated_codes(name: str) -> None:
    """The IR predictor's scratch and output buffer are codegen's, without generating code."""
    dep = _deployment(DATA / name)
    sources = generate(build_qmodel(dep.graph), dep.plan)
    over = runtime_overhead.predict(dep.graph, dep.plan, "cortex_m4")
    assert over.scratch == -(-max(sources.scratch_bytes, 1) // 4) * 4
    assert over.io == -(-sources.output_bytes // 4) * 4
    assert over.scratch <= runtime_overhead.scratch_bytes(dep.graph, None, "cortex_m4")  # the graph bound
    assert over.total == over.scratch + over.io + over.runtime + over.stack and over.stack > 0


def test_unfitted_core_gets_the_largest_fit() -> None:
    m0, _ = runtime_overhead.constants("cortex_m0plus")
    xt, source = runtime_overhead.constants("xtensa_lx7")
    assert "no fit for xtensa_lx7" in source and xt["stack_base"] >= m0["stack_base"]


def test_analysis_budgets_arena_plus_overhead() -> None:
    """fits_sram is arena + overhead within the budget; a device where the arena alone fits but the firmware's
    needs do not is 'does not fit'."""
    graph = from_onnx(DATA / "kws_ref_model.onnx")
    from tinyflow_plugins.schedulers.layer import LayerScheduler

    dep = plan_deployment(graph, LayerScheduler(), MemoryConfig(), SAMD21, None, compare_layer=False)
    a = dep.analysis
    assert a["sram_total_bytes"] == a["arena_bytes"] + a["sram_overhead_bytes"]
    assert a["sram_overhead_bytes"] == sum(a["sram_overhead_parts"].values())
    assert "cortex_m0plus" in a["sram_overhead_model"] and a["fits_sram"]
    tight_kb = (a["arena_bytes"] + a["sram_overhead_bytes"] // 2) / 1024
    tight = Device("tight", tight_kb, 256, "cortex_m0plus", 48)
    b = plan_deployment(graph, LayerScheduler(), MemoryConfig(), tight, None, compare_layer=False).analysis
    assert b["arena_bytes"] <= b["sram_budget_bytes"] and not b["fits_sram"] and not b["fits"]


def test_report_fits_is_the_linkers_verdict() -> None:
    f = Figures(sram_budget_bytes=32768, flash_budget_bytes=262144, arena_bytes=20000, flash_bytes=1000)
    f.sram_total_bytes, f.sram_overhead_bytes = 21500, 1500
    assert f.fits is True
    f.linker_fits = False
    assert f.fits is False
    fits_row = next(r for r in rows(f, {}) if r[0] == "fits")
    assert fits_row[1] == "NO" and "linker" in fits_row[2] and "DISAGREE" in fits_row[2]
    assert any(r[0] == "SRAM (arena + overhead)" for r in rows(f, {}))


def test_failed_checks_name_what_did_not_run() -> None:
    assert failed_checks({"built": False, "target": "xtensa_lx7"})[0].startswith("built: no, for xtensa_lx7")
    ok = {"built": True, "ran": True, "bit_exact": 3, "images": 3, "reference_check": "onnxruntime (m.onnx)"}
    assert failed_checks(ok) == []
    skipped = {**ok, "reference_check": "not run: onnxruntime cannot run m.onnx (invalid dimensions)"}
    assert failed_checks(skipped) == [f"reference runtime comparison: {skipped['reference_check']}"]


def test_auto_target_is_the_devices_core() -> None:
    assert linker.target_for("auto", "cortex_m0plus").name == "cortex_m0plus"
    assert linker.target_for("auto", "xtensa_lx7") is None
    assert "mps2-an385" in linker.target_for("auto", "cortex_m0plus").emulation_note
    assert FirmwareSettings().target == "auto" and FirmwareSettings().stack_reserve == "auto"


@needs_toolchain
def test_m0plus_firmware_overhead_is_covered(tmp_path) -> None:
    """The SAMD21 gets Cortex-M0+ code run on the M3 board (said), the linker script reserves the predicted stack,
    and the measured overhead (map file + painted stack) is within the prediction."""
    dep = _deployment(DATA / "kws_ref_model.onnx")
    model = build_qmodel(dep.graph)
    fw = make_firmware(dep, SAMD21, tmp_path, _images(model, 3), FirmwareSettings(images=3))
    assert fw["target"] == "cortex_m0plus" and "-mcpu=cortex-m0plus" in fw["cpu_flags"]
    assert fw["machine"] == "mps2-an385" and "cortex_m3" in fw["emulation"]
    assert fw["fits"] and fw["bit_exact"] == 3 and fw["failed_checks"] == []
    pred, meas = fw["sram_overhead_predicted"], fw["sram_overhead_measured"]
    assert meas["total"] <= pred["total"] and fw["sram_overhead_covered"]
    assert meas["scratch"] == pred["scratch"] and meas["io"] == pred["io"]
    ld = (Path(fw["project_dir"]) / "target" / "device.ld").read_text()
    assert f"_stack_reserve = {fw['stack_reserve_bytes']};" in ld and "LENGTH = 32768" in ld


def test_xtensa_is_written_not_built(tmp_path) -> None:
    """esp32s3: the C project and one paragraph; never an ELF for another core; a failed check."""
    esp = Device("esp32s3", 512, 8192, "xtensa_lx7", 240)
    dep = _deployment(DATA / "kws_ref_model.onnx")
    fw = make_firmware(dep, esp, tmp_path, _images(build_qmodel(dep.graph), 2), FirmwareSettings(images=2))
    assert fw["built"] is False and "xtensa_lx7" in fw["not_built"] and fw["failed_checks"]
    folder = Path(fw["project_dir"])
    assert (folder / "model.c").is_file() and not list(folder.rglob("*.elf"))


def test_firmware_app_exits_2_when_not_built(tmp_path) -> None:
    cmd = [sys.executable, "-m", "tinyflow.firmware", f"network.path={DATA / 'kws_ref_model.onnx'}"]
    cmd += ["device=esp32s3", "firmware.images=2", "tracking=none", f"hydra.run.dir={tmp_path}"]
    res = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "not built" in res.stdout and (tmp_path / "firmware" / "model.c").is_file()


@pytest.mark.slow
def test_the_pipeline_on_a_core_without_a_toolchain_exits_2_with_the_report(run_cli, tmp_path):
    """`python -m tinyflow backend=c device=esp32s3`: the C project is written, nothing is built for another
    core, the report says "NOT BUILT" with the failed checks, and the exit code is 2."""
    from conftest import SMALL_PIPELINE

    res = run_cli("backend=c", "device=esp32s3", *SMALL_PIPELINE)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "checks failed" in res.stderr
    report = (tmp_path / "run" / "report.md").read_text()
    assert "NOT BUILT" in report and "checks FAILED" in report
    assert not list((tmp_path / "run").rglob("*.elf"))
