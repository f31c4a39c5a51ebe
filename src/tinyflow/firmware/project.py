"""One firmware from an int8 model and its plan: generate, build, link for the device, run, compare, measure.

`make_firmware` is what `python -m tinyflow.firmware` and `backend=c` both call. It returns the `firmware`
section of the report: the firmware's memory from the map file and the painted stack, the emulator's outputs
checked bit for bit against the NumPy oracle and by top-1 against onnxruntime, instructions per inference.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyflow.device import Device
from tinyflow.errors import ConfigError
from tinyflow.firmware import build, linker
from tinyflow.firmware.codegen import generate
from tinyflow.firmware.emulator import run_images
from tinyflow.firmware.oracle import run_oracle
from tinyflow.firmware.qmodel import ROUNDINGS, QModel, build_qmodel
from tinyflow.firmware.rnnpool_model import required_graph
from tinyflow.memory.plan import ExecutionPlan

log = logging.getLogger(__name__)
ON_OVERFLOW = ("error", "report")
RNNPOOL_ARITHMETIC = "float32 on the FPU (stem int8, RNNPool float32, output quantized to int8)"


@dataclass(frozen=True)
class FirmwareSettings:
    """How to build and check the firmware (the `firmware:` / `backend:` config keys of the same names)."""

    target: str = "cortex_m7"  # cortex_m7 (qemu mps2-an500) | cortex_m4 (mps2-an386)
    opt: str = "-O2"  # -O2 | -Os | -O3 | -O1 | -O0
    images: int = 100  # test images run on the emulator (one qemu run)
    stack_reserve: int = 2048  # bytes the linker script reserves for the stack at least
    on_overflow: str = "error"  # error: a link overflow stops the job; report: record it, measure on the board
    rounding: str = "single"  # single (CMSIS-NN single rounding) | tflite (TF Lite's double rounding, as TFLM)
    timeout_s: float = 900.0

    def __post_init__(self) -> None:
        linker.target(self.target)
        build.compile_flags(linker.target(self.target), self.opt)
        if self.images < 1:
            raise ConfigError(f"firmware images = {self.images}: run at least one test image on the emulator.")
        if self.on_overflow not in ON_OVERFLOW:
            raise ConfigError(f"firmware on_overflow = '{self.on_overflow}': use one of {', '.join(ON_OVERFLOW)}.")
        if self.rounding not in ROUNDINGS:
            raise ConfigError(f"firmware rounding = '{self.rounding}': use one of {', '.join(ROUNDINGS)}.")
        if self.stack_reserve < 256:
            raise ConfigError(f"firmware stack_reserve = {self.stack_reserve}: reserve at least 256 bytes.")


def onnxruntime_outputs(onnx_path: str | Path, images: np.ndarray, model: QModel) -> np.ndarray | None:
    """The int8 ONNX file's (float) outputs under onnxruntime, or None when onnxruntime refuses the file."""
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        int8_in, int8_out = model.int8_io
        x = model.quantize_nchw(images) if int8_in else images
        want = sess.get_inputs()[0].shape
        if x.ndim == 4 and all(isinstance(d, int) for d in want[1:]) and list(want[1:]) != list(x.shape[1:]):
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # a converted TF Lite model takes NHWC
        out = np.concatenate(
            [sess.run(None, {sess.get_inputs()[0].name: x[i : i + 64]})[0] for i in range(0, len(x), 64)]
        )
        return model.dequantize_output(out) if int8_out else out
    except Exception as exc:  # onnxruntime raises several types for files it rejects
        log.warning("firmware: onnxruntime cannot run %s (%s); no top-1 comparison", onnx_path, str(exc)[:200])
        return None


def plan_qmodel(onnx_int8: str | Path, plan: ExecutionPlan) -> QModel:
    """The integer model of the file the plan was made for: an RNNPool plan's network is the description the
    schedule stage recorded beside the file (the importer does not read RNNPool's ops)."""
    if not any(step.op == "rnnpool" for step in plan.steps):
        return build_qmodel(onnx_int8)
    return build_qmodel(onnx_int8, required_graph(onnx_int8, "rnnpool"))


def _zip(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file() and "run_" not in f.parent.name and f.suffix not in (".o", ".bin"):
                zf.write(f, f.relative_to(folder.parent))
    return target


def make_firmware(
    onnx_int8: str | Path,
    plan: ExecutionPlan,
    device: Device,
    out_dir: str | Path,
    images: np.ndarray,
    settings: FirmwareSettings,
    qmodel: QModel | None = None,
) -> dict[str, Any]:
    """Generate, build, run and check; `images` are float NCHW test images (the first `settings.images`)."""
    out = Path(out_dir)
    model = qmodel if qmodel is not None else plan_qmodel(onnx_int8, plan)
    model.set_rounding(settings.rounding)
    sources = generate(model, plan)
    tgt = linker.target(settings.target)
    flags = build.compile_flags(tgt, settings.opt)
    folder = out / "firmware"
    if folder.exists():
        shutil.rmtree(folder)
    build.write_project(folder, sources, linker.device_script(device, settings.stack_reserve), flags)
    result: dict[str, Any] = {
        "target": settings.target,
        "machine": tgt.machine,
        "opt": settings.opt,
        "rounding": settings.rounding,
        "plan_arena_bytes": plan.arena_bytes,
        "scheduler": plan.scheduler,
        **{k: plan.extra[k] for k in ("n_patches", "patch_blocks", "extra_macs_ratio") if k in plan.extra},
        **({"rnnpool_arithmetic": RNNPOOL_ARITHMETIC} if any(la.kind == "rnnpool" for la in model.layers) else {}),
        "macs": plan.macs,
        "scratch_bytes": sources.scratch_bytes,
        "device": device.name,
        "device_sram_bytes": device.sram_total_bytes,
        "device_flash_bytes": device.flash_total_bytes,
        "project_dir": str(folder),
    }
    missing = build.missing_tools()
    if missing:
        result.update(built=False, skipped=f"{', '.join(missing)} not installed: C project written, not built or run")
        log.warning("firmware: %s", result["skipped"])
        result["project_zip"] = str(_zip(folder, out / "firmware.zip"))
        return result
    objs = build.compile_objects(folder, flags)
    try:
        elf = build.link(folder, objs, flags, "target/device.ld", "firmware.elf")
        result.update(fits=True, overflow=None)
    except build.LinkOverflowError as exc:
        message = (
            f"firmware for {device.name} ({device.sram_kb:g} KB SRAM, {device.flash_kb:g} KB flash): {exc}. "
            f"A smaller network or plan, or a device with more memory, fits; {_reserve_hint(device, exc)}"
            f"The project is in {folder}."
        )
        if settings.on_overflow == "error":
            raise build.LinkOverflowError(message, exc.region, exc.over_bytes) from None
        log.warning("firmware: %s", message)
        result.update(fits=False, overflow=message, overflow_region=exc.region, overflow_bytes=exc.over_bytes)
        (folder / "target" / "board.ld").write_text(linker.board_script(settings.stack_reserve))
        elf = build.link(folder, objs, flags, "target/board.ld", "firmware_board.elf")
    sections = build.read_map(elf.with_suffix(".map"))
    n = min(settings.images, len(images))
    x_float = np.ascontiguousarray(images[:n], np.float32)
    x_q = model.quantize_input(x_float)
    run = run_images(elf, tgt.machine, x_q.reshape(n, -1), sources.output_bytes, settings.timeout_s)
    ref = run_oracle(model, x_q).reshape(n, -1)
    ort = onnxruntime_outputs(onnx_int8, x_float, model)
    ours = model.dequantize_output(run.outputs)
    result.update(
        built=True,
        arena_bytes=sections.arena,
        text_bytes=sections.text,
        rodata_bytes=sections.rodata,
        data_bytes=sections.data,
        bss_bytes=sections.bss,
        stack_bytes=run.stack_bytes,
        sram_bytes=sections.bss + sections.data + run.stack_bytes,
        flash_bytes=sections.text + sections.rodata + sections.data,
        image_bytes=build.image_sizes(elf),
        images=n,
        bit_exact=int((run.outputs == ref).all(axis=1).sum()),
        instructions_per_inference=int(np.median(run.instructions)),
        instructions_min=int(run.instructions.min()),
        instructions_max=int(run.instructions.max()),
        emulator_wall_s=round(run.wall_s, 3),
        map_file=str(elf.with_suffix(".map")),
    )
    result["instructions_per_mac"] = result["instructions_per_inference"] / max(1, plan.macs)
    if ort is not None:
        ort = ort.reshape(n, -1)
        result["top1_agreement_onnxruntime"] = float(np.mean(ours.argmax(1) == ort.argmax(1)))
        steps = np.abs(np.rint(ort / model.output_scale) - np.rint(ours / model.output_scale))
        result["max_diff_steps_onnxruntime"] = int(steps.max())
    result["project_zip"] = str(_zip(folder, out / "firmware.zip"))
    return result


def load_plan(path: str | Path) -> ExecutionPlan:
    """An ExecutionPlan back from the `plan.json` the schedule stage writes (`ExecutionPlan.to_dict`)."""
    import json

    from tinyflow.memory.plan import Step, TensorAlloc

    data = json.loads(Path(path).read_text())
    steps = [Step(**{**s, "patch": tuple(s["patch"]) if s.get("patch") else None}) for s in data.pop("steps")]
    tensors = [TensorAlloc(**t) for t in data.pop("tensors")]
    return ExecutionPlan(steps=steps, tensors=tensors, **data)


def _reserve_hint(device: Device, exc: build.LinkOverflowError) -> str:
    """How to make a pipeline's search leave room for what the firmware holds beside the plan (stack, scratch,
    I/O buffers, code): the device's reserve that covers the overflow, in whole KB."""
    kind = {"RAM": "sram", "FLASH": "flash"}.get(exc.region)
    if kind is None:
        return ""
    current = float(getattr(device, f"{kind}_reserve_kb"))
    needed = int(np.ceil(current + exc.over_bytes / 1024))
    return (
        f"in a pipeline, `device.{kind}_reserve_kb={needed}` (now {current:g}) makes the search keep that much "
        f"{kind.upper() if kind == 'sram' else kind} free for the firmware beside the plan. "
    )
