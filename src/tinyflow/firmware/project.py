"""One firmware from an int8 model and its plan: generate, build, link for the device, run, compare, measure.

`make_firmware(deployment, …)` is what `python -m tinyflow.firmware` and `backend=c` both call: the integer
model is lowered from the deployment's graph, the C from its plan. It returns the `firmware` section of the
report: the firmware's memory from the map file and the painted stack, the emulator's outputs checked bit for
bit against the NumPy oracle and against a peer runtime (`reference_check`: onnxruntime on the model's .onnx
file or a .tflite's .onnx twin, else TF Lite Micro, else "not run: <why>"), instructions per inference.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tinyflow.deployment import Deployment
from tinyflow.device import Device
from tinyflow.errors import ConfigError
from tinyflow.firmware import build, linker
from tinyflow.firmware.codegen import generate, row_padding_bytes, set_row_padding
from tinyflow.firmware.emulator import run_images
from tinyflow.firmware.oracle import run_oracle
from tinyflow.firmware.profile import profiled_overhead
from tinyflow.firmware.profile_rows import profile_failures
from tinyflow.firmware.qmodel import ROUNDINGS, QModel, build_qmodel
from tinyflow.memory import runtime_overhead

log = logging.getLogger(__name__)
ON_OVERFLOW = ("error", "report")
MARKER = ".tinyflow-firmware"  # in every project folder tinyflow writes (the only ones it replaces)
RNNPOOL_ARITHMETIC = "float32 on the FPU (stem int8, RNNPool float32, output quantized to int8)"


MAX_IMAGES = 10_000  # test images per emulator run (the host holds them, the board's image memory takes them)


@dataclass(frozen=True)
class FirmwareSettings:
    """How to build and check the firmware (the `firmware:` / `backend:` config keys of the same names)."""

    target: str = "auto"  # auto: the device's own core (device.core) | cortex_m0plus | _m3 | _m4 | _m7 | _m33
    opt: str = "-O2"  # -O2 | -Os | -O3 | -O1 | -O0
    images: int = 100  # test images run on the emulator (one qemu run)
    stack_reserve: int | str = "auto"  # auto: the overhead model's stack for the core; or bytes (at least 256)
    on_overflow: str = "error"  # error: a link overflow stops the job; report: record it, measure on the board
    rounding: str = "single"  # single (CMSIS-NN single rounding) | tflite (TF Lite's double rounding, as TFLM)
    timeout_s: float = 900.0
    profile: bool = False  # instructions per layer and per op kind (firmware/profile.py)

    def __post_init__(self) -> None:
        if self.target != "auto":
            build.compile_flags(linker.target(self.target), self.opt)
        else:
            build.compile_flags(linker.TARGETS["cortex_m7"], self.opt)  # checks the option
        if self.images < 1:
            raise ConfigError(f"firmware images = {self.images}: run at least one test image on the emulator.")
        if self.images > MAX_IMAGES:
            raise ConfigError(
                f"firmware images = {self.images}: the emulator runs at most {MAX_IMAGES:,} test images in one run "
                "(they are held in the board's RAM); give fewer, e.g. `firmware.images=100`."
            )
        if self.on_overflow not in ON_OVERFLOW:
            raise ConfigError(f"firmware on_overflow = '{self.on_overflow}': use one of {', '.join(ON_OVERFLOW)}.")
        if self.rounding not in ROUNDINGS:
            raise ConfigError(f"firmware rounding = '{self.rounding}': use one of {', '.join(ROUNDINGS)}.")
        if self.stack_reserve != "auto" and (isinstance(self.stack_reserve, str) or self.stack_reserve < 256):
            raise ConfigError(
                f"firmware stack_reserve = {self.stack_reserve!r}: `auto` (the overhead model's stack for the core) "
                "or at least 256 bytes."
            )

    def stack_bytes(self, predicted: int) -> int:
        """The linker script's stack reserve: the predicted high-water mark (auto) or the configured bytes."""
        return -(-int(predicted) // 8) * 8 if self.stack_reserve == "auto" else int(self.stack_reserve)


def _ort_session(path: Path) -> Any:
    """An onnxruntime session on the file, with a DequantizeLinear whose axis lies past a 1-D constant's rank (a
    converter's fault onnxruntime rejects when it runs: person_detect.onnx) read as axis 0, as the importer does."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(path))
    ranks = {t.name: len(t.dims) for t in proto.graph.initializer}
    for node in proto.graph.node:
        for at in node.attribute:
            if node.op_type == "DequantizeLinear" and at.name == "axis" and ranks.get(node.input[0]) == 1:
                at.i = 0
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.log_severity_level = 1, 3
    return ort.InferenceSession(proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def onnxruntime_outputs(onnx_path: str | Path, images: np.ndarray, model: QModel) -> np.ndarray:
    """The int8 ONNX file's (float) outputs under onnxruntime, image by image when its batch is fixed at 1."""
    sess = _ort_session(Path(onnx_path))
    int8_in, int8_out = model.int8_io
    x = model.quantize_nchw(images) if int8_in else images
    want = sess.get_inputs()[0].shape
    if x.ndim == 4 and all(isinstance(d, int) for d in want[1:]) and list(want[1:]) != list(x.shape[1:]):
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # a converted TF Lite model takes NHWC
    step = 1 if want and want[0] == 1 else 64
    name = sess.get_inputs()[0].name
    out = np.concatenate([sess.run(None, {name: x[i : i + step]})[0] for i in range(0, len(x), step)])
    return model.dequantize_output(out) if int8_out else out


def reference_outputs(
    model_path: str | None, images: np.ndarray, model: QModel, input_layout: str | None = None
) -> tuple[np.ndarray | None, str]:
    """A peer runtime's float outputs for the images and what ran them, or (None, "not run: <why>"): an .onnx
    model under onnxruntime; a .tflite model's .onnx twin under onnxruntime, else TF Lite Micro if importable."""
    if not model_path:
        return None, "not run: the deployment has no model file to compare against"
    path = Path(model_path)
    if path.suffix.lower() == ".tflite":
        twin = path.with_suffix(".onnx")
        if not twin.is_file():
            return _tflm_reference(path, images, model, input_layout)
        path = twin
    try:
        return onnxruntime_outputs(path, images, model), f"onnxruntime ({path.name})"
    except Exception as exc:  # onnxruntime raises several types for files it rejects
        why = f"not run: onnxruntime cannot run {path.name} ({type(exc).__name__}: {str(exc)[:160]})"
        log.warning("firmware: reference check %s", why)
        return None, why


def _tflm_reference(
    path: Path, images: np.ndarray, model: QModel, input_layout: str | None = None
) -> tuple[np.ndarray | None, str]:
    from tinyflow.firmware.tflm_reference import tflm_available, tflm_outputs

    if not tflm_available():
        why = f"not run: {path.name} has no .onnx twin beside it and TF Lite Micro (tflite-micro) is not importable"
        log.warning("firmware: reference check %s", why)
        return None, why
    nchw = input_layout == "NCHW"  # a .tflite whose input is NCHW (its leading TRANSPOSE folded by the importer)
    out = tflm_outputs(path, model.quantize_nchw(images) if nchw else model.quantize_input(images))
    return model.dequantize_output(out), f"TF Lite Micro ({path.name})"


def _zip(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file() and "run_" not in f.parent.name and f.suffix not in (".o", ".bin", ".su"):
                zf.write(f, f.relative_to(folder.parent))
    return target


def project_folder(out: Path) -> Path:
    """`out/firmware`, replaced when tinyflow wrote it (its marker file); a folder tinyflow did not create is never
    deleted: the project goes to the first free `firmware-<k>` beside it."""
    folder, k = out / "firmware", 1
    while folder.exists() and not (folder / MARKER).is_file():
        k += 1
        folder = out / f"firmware-{k}"
    if folder.exists():
        shutil.rmtree(folder)
    if k > 1:
        log.warning(
            "firmware: %s exists and tinyflow did not write it; the project goes to %s", out / "firmware", folder
        )
    return folder


def make_firmware(
    deployment: Deployment,
    device: Device,
    out_dir: str | Path,
    images: np.ndarray,
    settings: FirmwareSettings,
) -> dict[str, Any]:
    """Generate, build, run and check the deployment's graph and plan for the device's core (or the configured
    target); `images` are float NCHW test images (the first `settings.images`). A core with no toolchain here gets
    the C project and `built: False` with the reason (`not_built`); never an image for another core."""
    out = Path(out_dir)
    plan = deployment.plan
    model = build_qmodel(deployment.graph)
    model.set_rounding(settings.rounding)
    sources = generate(model, plan, profile=settings.profile)
    tgt = linker.target_for(settings.target, device.core)
    core = tgt.name if tgt is not None else device.core
    predicted = runtime_overhead.predict(deployment.graph, plan, core, settings.opt)
    if settings.profile:
        predicted = profiled_overhead(predicted, len(sources.profile_points))
    stack = settings.stack_bytes(predicted.stack)
    folder = project_folder(out)
    flags = build.compile_flags(tgt, settings.opt) if tgt is not None else []
    machine = tgt.machine if tgt is not None else None
    build.write_project(folder, sources, linker.device_script(device, stack), flags, machine or "mps2-an500")
    (folder / MARKER).write_text("written by tinyflow.firmware; replaced on the next run into this folder\n")
    result: dict[str, Any] = {
        "target": core,
        "core": device.core,
        "cpu_flags": " ".join(tgt.cflags) if tgt is not None else "",
        "machine": machine,
        "emulation": tgt.emulation_note if tgt is not None else "",
        "opt": settings.opt,
        "rounding": settings.rounding,
        "plan_arena_bytes": plan.arena_bytes,
        "scheduler": plan.scheduler,
        **{k: plan.extra[k] for k in ("n_patches", "patch_blocks", "extra_macs_ratio") if k in plan.extra},
        **({"rnnpool_arithmetic": RNNPOOL_ARITHMETIC} if any(la.kind == "rnnpool" for la in model.layers) else {}),
        "macs": plan.macs,
        "scratch_bytes": sources.scratch_bytes,
        "stack_reserve_bytes": stack,
        "sram_overhead_predicted": predicted.to_dict(),
        "device": device.name,
        "device_sram_bytes": device.sram_total_bytes,
        "device_flash_bytes": device.flash_total_bytes,
        "project_dir": str(folder),
    }
    why = not_built_reason(tgt, device)
    if why:
        result.update(built=False, skipped=why, not_built=why, fits=None)
        result["reference_check"] = "not run: the firmware was not built"
        log.warning("firmware: %s", why)
        result["project_zip"] = str(_zip(folder, out / "firmware.zip"))
        result["failed_checks"] = failed_checks(result)
        return result
    assert tgt is not None
    elf, sources = _link_with_row_padding(
        model, plan, sources, folder, flags, device, settings, result, stack, machine or "mps2-an500"
    )
    sections = build.read_map(elf.with_suffix(".map"))
    image = build.image_sizes(elf)
    result.update(
        built=True,
        arena_bytes=sections.arena,
        text_bytes=sections.text,
        rodata_bytes=sections.rodata,
        data_bytes=sections.data,
        bss_bytes=sections.bss,
        flash_bytes=sections.text + sections.rodata + sections.data,
        image_bytes=image,
        map_file=str(elf.with_suffix(".map")),
    )
    if tgt.machine is None:
        result.update(ran=False, reference_check=f"not run: {tgt.emulation_note}")
        result["project_zip"] = str(_zip(folder, out / "firmware.zip"))
        result["failed_checks"] = failed_checks(result)
        return result
    if max(device.sram_total_bytes, device.flash_total_bytes) > linker.BOARD_BYTES:
        result.update(ran=False, reference_check="not run: the device is larger than the emulated board")
        result["not_run"] = (
            f"not run: {device.name} has {device.sram_kb:g} KB SRAM and {device.flash_kb:g} KB flash, more than the "
            f"emulated MPS2 board's {linker.BOARD_BYTES >> 20} MB of each; the firmware is built and linked for the "
            "device (the linker's check of its memory holds), but qemu cannot run it. Run it on the part itself."
        )
        result["project_zip"] = str(_zip(folder, out / "firmware.zip"))
        result["failed_checks"] = failed_checks(result)
        return result
    n = min(settings.images, len(images))
    x_float = np.ascontiguousarray(images[:n], np.float32)
    x_q = model.quantize_input(x_float)
    run = run_images(elf, tgt.machine, x_q.reshape(n, -1), sources.output_bytes, settings.timeout_s)
    ref = run_oracle(model, x_q).reshape(n, -1)
    layout = deployment.graph.meta.get("input_layout")
    ref_out, result["reference_check"] = reference_outputs(deployment.model_path, x_float, model, layout)
    ours = model.dequantize_output(run.outputs)
    frames = build.frame_bytes(folder)
    result.update(
        ran=True,
        stack_bytes=run.stack_bytes,
        sram_bytes=sections.bss + sections.data + run.stack_bytes,
        images=n,
        bit_exact=int((run.outputs == ref).all(axis=1).sum()),
        instructions_per_inference=int(np.median(run.instructions)),
        instructions_min=int(run.instructions.min()),
        instructions_max=int(run.instructions.max()),
        emulator_wall_s=round(run.wall_s, 3),
    )
    result["sram_overhead_measured"] = measured_overhead(image, sections.arena, elf, run.stack_bytes + frames)
    result["sram_overhead_covered"] = result["sram_overhead_measured"]["total"] <= predicted.total
    result["instructions_per_mac"] = result["instructions_per_inference"] / max(1, plan.macs)
    if settings.profile:  # firmware/profile.py: per layer, per op kind, the method's check, the figure
        from tinyflow.firmware.profile import profile_section

        result.update(profile_section(model, sources, run, folder))
    if ref_out is not None:
        ref_out = ref_out.reshape(n, -1)
        key = "tflm" if result["reference_check"].startswith("TF Lite Micro") else "onnxruntime"
        result[f"top1_agreement_{key}"] = float(np.mean(ours.argmax(1) == ref_out.argmax(1)))
        steps = np.abs(np.rint(ref_out / model.output_scale) - np.rint(ours / model.output_scale))
        result[f"max_diff_steps_{key}"] = int(steps.max())
    result["project_zip"] = str(_zip(folder, out / "firmware.zip"))
    result["failed_checks"] = failed_checks(result)
    for failure in result["failed_checks"]:
        log.warning("firmware: check failed: %s", failure)
    return result


def failed_checks(result: dict[str, Any]) -> list[str]:
    """The checks that failed or could not run, one line each (a check that could not run is a failed check)."""
    out = []
    if not result.get("built"):
        out.append(f"built: no, for {result.get('target')} (the firmware section's paragraph says why)")
    elif not result.get("ran"):
        out.append(f"run on the emulator: {result.get('not_run') or result.get('emulation') or 'not run'}")
    else:
        if result["bit_exact"] != result["images"]:
            out.append(f"bit-exact vs the oracle: {result['bit_exact']} / {result['images']} images")
        if not result.get("sram_overhead_covered", True):
            measured = result["sram_overhead_measured"]["total"]
            out.append(
                f"SRAM overhead: measured {measured:,} B > predicted {result['sram_overhead_predicted']['total']:,} B"
            )
    check = str(result.get("reference_check", ""))
    if check.startswith("not run"):
        out.append(f"reference runtime comparison: {check}")
    out += profile_failures(result)  # a profile whose method check failed (none without a profile)
    return out


def not_built_reason(tgt: linker.Target | None, device: Device) -> str:
    """Why the firmware is written but not built ('' when it can be built): a core with no toolchain here, or
    the cross-compiler / qemu missing."""
    if tgt is None:
        return (
            f"not built: {device.name}'s core is {device.core}, and tinyflow builds only for Cortex-M cores "
            f"(arm-none-eabi-gcc: {', '.join(sorted(linker.TARGETS))}); an image for another core would not run on "
            f"it. The C project (portable C99: model.c, model.h, tf_kernels.h) is written; build it with the "
            f"core's own toolchain (for Xtensa, ESP-IDF's xtensa-esp32s3-elf-gcc) and its start-up code."
        )
    missing = build.missing_tools()
    if missing:
        return f"not built: {', '.join(missing)} not installed: C project written, not built or run"
    return ""


def measured_overhead(image: dict[str, int], arena: int, elf: Path, stack: int) -> dict[str, int]:
    """The firmware's SRAM beside the arena, measured: the ELF's .data + .bss less the arena, split by the map
    file into the kernels' scratch arrays, the output buffer and the rest; the stack's high-water mark (painted
    stack + start-up frames)."""
    static = image.get(".data", 0) + image.get(".bss", 0) - arena
    sizes = build.bss_symbols(elf.with_suffix(".map"), ("tf_plane", "tf_wide", "tf_rnn_scratch", "out_buf"))
    scratch = sizes.get("tf_plane", 0) + sizes.get("tf_wide", 0) + sizes.get("tf_rnn_scratch", 0)
    scratch = -(-scratch // 4) * 4
    io = -(-sizes.get("out_buf", 0) // 4) * 4
    parts = {"scratch": scratch, "io": io, "runtime": static - scratch - io, "stack": stack}
    return {**parts, "total": static + stack}


def _link_with_row_padding(
    model: QModel,
    plan: Any,
    sources: Any,
    folder: Path,
    flags: list[str],
    device: Device,
    settings: FirmwareSettings,
    result: dict,
    stack: int,
    machine: str,
) -> tuple[Path, Any]:
    """Link the padded im2col rows (`codegen.row_padding_bytes` of weights; no remainder loops) when the device's
    flash has room for them. On a flash overflow the unpadded rows are built too (fewer weight bytes, the kernels'
    remainder loops) and kept when they link; when neither links, the smaller overflow is the one reported (`_link`).
    The result's `row_padding` says what the padding costs and which was chosen, with both overflows."""
    padding = row_padding_bytes(model)
    result["row_padding"] = {"bytes": padding, "kept": True}
    strict = replace(settings, on_overflow="error")
    try:
        return _link(folder, flags, device, strict if padding else settings, result, stack), sources
    except build.LinkOverflowError as exc:
        if exc.region != "FLASH":
            return _link(folder, flags, device, settings, result, stack), sources
        padded_over = exc.over_bytes

    def write(on: bool) -> Any:
        set_row_padding(model, on)
        src = generate(model, plan, profile=settings.profile)
        build.write_project(folder, src, linker.device_script(device, stack), flags, machine)
        result.update(scratch_bytes=src.scratch_bytes)
        return src

    unpadded = write(False)
    try:
        elf = _link(folder, flags, device, strict, result, stack)
    except build.LinkOverflowError as exc:
        unpadded_over = exc.over_bytes if exc.region == "FLASH" else None
    else:
        why = f"the padded firmware overflowed the device's flash by {padded_over:,} B; without the padding it links"
        result["row_padding"] = {"bytes": padding, "kept": False, "why": why, "padded_over": padded_over}
        log.info("firmware: im2col rows not padded (%s)", why)
        return elf, unpadded
    keep = unpadded_over is None or padded_over <= unpadded_over
    why = (
        f"neither links: flash overflows by {padded_over:,} B with the padding, "
        f"{'a RAM overflow' if unpadded_over is None else f'{unpadded_over:,} B'} without it"
    )
    result["row_padding"] = {
        "bytes": padding,
        "kept": keep,
        "why": why,
        "padded_over": padded_over,
        "unpadded_over": unpadded_over,
    }
    chosen = write(True) if keep else unpadded
    return _link(folder, flags, device, settings, result, stack), chosen


def _link(folder: Path, flags: list[str], device: Device, settings: FirmwareSettings, result: dict, stack: int) -> Path:
    """Compile and link for the device; an overflow is one paragraph (`on_overflow: error`) or recorded in the
    result and linked for the whole board (`report`)."""
    objs = build.compile_objects(folder, flags)
    try:
        elf = build.link(folder, objs, flags, "target/device.ld", "firmware.elf")
        result.update(fits=True, overflow=None)
        return elf
    except build.LinkOverflowError as exc:
        message = (
            f"firmware for {device.name} ({device.sram_kb:g} KB SRAM, {device.flash_kb:g} KB flash): {exc}. "
            f"A smaller network or plan, or a device with more memory, fits; {_ram_hint(exc, result)}"
            f"{_reserve_hint(device, exc) if exc.region == 'FLASH' else ''}"
            f"The project is in {folder}."
        )
        if settings.on_overflow == "error":
            raise build.LinkOverflowError(message, exc.region, exc.over_bytes) from None
        log.warning("firmware: %s", message)
        result.update(fits=False, overflow=message, overflow_region=exc.region, overflow_bytes=exc.over_bytes)
        (folder / "target" / "board.ld").write_text(linker.board_script(stack))
        return build.link(folder, objs, flags, "target/board.ld", "firmware_board.elf")


def _ram_hint(exc: build.LinkOverflowError, result: dict) -> str:
    """What the plan needs in RAM: arena + the firmware's predicted overhead, which a plan made for this device
    (schedule, analyze, search) already counts, so no reserve is needed for it."""
    if exc.region != "RAM":
        return ""
    pred = result["sram_overhead_predicted"]
    return (
        f"this plan needs arena {result['plan_arena_bytes']:,} + firmware overhead {pred['total']:,} B "
        f"(scratch {pred['scratch']:,}, I/O {pred['io']:,}, runtime {pred['runtime']:,}, stack {pred['stack']:,}; "
        f"{pred['core']}) = {result['plan_arena_bytes'] + pred['total']:,} B; a plan made for this device "
        "(`schedule`, `python -m tinyflow.analyze`, the search) counts both and does not pick it. "
    )


def _reserve_hint(device: Device, exc: build.LinkOverflowError) -> str:
    """How to make a pipeline's search leave room for what the firmware holds beside the plan (stack, scratch,
    I/O buffers, code): the device's reserve that covers the overflow, in whole KB."""
    kind = {"RAM": "sram", "FLASH": "flash"}.get(exc.region)
    if kind is None:
        return ""
    current = float(getattr(device, f"{kind}_reserve_kb"))
    needed = int(np.ceil(current + exc.over_bytes / 1024))
    if needed >= float(getattr(device, f"{kind}_kb")):  # no reserve the device validation accepts covers it
        return (
            f"the firmware needs {exc.over_bytes:,} B more {kind.upper() if kind == 'sram' else kind} than "
            f"{device.name} has beside this model, more than any reserve can leave free: choose a device with more "
            f"{kind.upper() if kind == 'sram' else kind} or a smaller model. "
        )
    return (
        f"in a pipeline, `device.{kind}_reserve_kb={needed}` (now {current:g}) makes the search keep that much "
        f"{kind.upper() if kind == 'sram' else kind} free for the firmware beside the plan. "
    )
