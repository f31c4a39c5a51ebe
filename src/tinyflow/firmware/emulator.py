"""Run a firmware ELF on qemu (mps2 board, no semihosting): feed int8 images, read outputs, instructions, stack.

All images go through one qemu run: the host loads them into board RAM before reset (`images.bin`), the harness
writes each output, its instruction count and an end-of-run record on UART0 (`output.bin`) and ends qemu with a
reset request. The guest has no semihosting, so it cannot open, write or delete a host file (docs/design.md §17).
`-icount shift=0` makes the virtual clock advance 1 ns per instruction, so the harness's timer gives instructions,
deterministically (in steps of 40, the 25 MHz timer's period): instructions, not cycles — qemu does not model
pipeline timing.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyflow.errors import TinyflowError


class EmulatorError(TinyflowError):
    """qemu did not run the firmware to the end (a fault, a timeout, missing output)."""


@dataclass
class RunResult:
    outputs: np.ndarray  # (N, output_bytes) int8
    instructions: np.ndarray  # (N,) per inference
    stack_bytes: int
    wall_s: float
    extra: np.ndarray | None = None  # (N, K) uint32 words after each image's count (a profiled build's profile)


TRAILER_MAGIC = 0x5446454E
STATUS = {0: "ok", 3: "a fault (a HardFault, or a request the emulator does not serve: semihosting is off)"}


def qemu_command(elf: Path, machine: str, images_bin: Path, uart_out: Path) -> list[str]:
    """qemu with no semihosting and no host access but the two files the harness names: the images loaded into
    board RAM before reset, UART0 written to `uart_out`; a reset request ends it (-no-reboot)."""
    from tinyflow.firmware.linker import IMAGES_ADDR

    if machine not in IMAGES_ADDR:
        raise EmulatorError(f"firmware: no qemu harness for machine '{machine}' (known: {sorted(IMAGES_ADDR)})")
    cmd = ["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none", "-no-reboot"]
    cmd += ["-serial", f"file:{uart_out}", "-icount", "shift=0,align=off,sleep=off"]
    cmd += ["-device", f"loader,file={images_bin},addr=0x{IMAGES_ADDR[machine]:08X},force-raw=on"]
    return [*cmd, "-kernel", str(elf.resolve())]


def run_images(elf: Path, machine: str, inputs: np.ndarray, out_bytes: int, timeout_s: float = 600) -> RunResult:
    """Run `elf` on `machine` over int8 `inputs` (N, input_bytes)."""
    import struct
    import time

    from tinyflow.firmware.linker import IMAGES_BYTES

    work = elf.parent / f"run_{elf.stem}"
    work.mkdir(exist_ok=True)
    images_bin, uart_out = work / "images.bin", work / "output.bin"
    uart_out.unlink(missing_ok=True)
    x = np.ascontiguousarray(inputs, np.int8)
    n = len(x)
    if 4 + x.nbytes > IMAGES_BYTES:
        raise EmulatorError(
            f"firmware: {n} images of {x[0].nbytes if n else 0} B do not fit the board's {IMAGES_BYTES >> 20} MB "
            "image memory; run fewer (firmware.images)"
        )
    images_bin.write_bytes(struct.pack("<I", n) + x.tobytes())
    start = time.perf_counter()
    try:
        res = subprocess.run(
            qemu_command(elf, machine, images_bin, uart_out),
            cwd=work,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise EmulatorError(f"firmware: qemu ran {elf.name} for more than {timeout_s:.0f} s; stopped") from None
    wall = time.perf_counter() - start
    raw = uart_out.read_bytes() if uart_out.is_file() else b""
    magic, images, stack, status = _trailer(raw)
    if res.returncode != 0 or magic != TRAILER_MAGIC:
        raise EmulatorError(
            f"firmware: qemu ({machine}) did not run {elf} to the end (exit {res.returncode}): "
            f"{(res.stderr or res.stdout).strip()[:500] or 'no end-of-run record on the UART'}"
        )
    if status != 0:
        raise EmulatorError(
            f"firmware: the firmware stopped on {STATUS.get(status, f'status {status}')} after {images} of {n} "
            f"images ({elf})"
        )
    record = (len(raw) - 16) // max(n, 1)
    if images != n or len(raw) != n * record + 16 or record < out_bytes + 4 or (record - out_bytes) % 4:
        raise EmulatorError(f"firmware: expected {n} outputs of {out_bytes} B from qemu, got {images} ({len(raw)} B)")
    outputs, instructions, extra = _records(raw, n, out_bytes)
    return RunResult(outputs, instructions, int(stack), wall, extra if extra.shape[1] else None)


def _trailer(raw: bytes) -> tuple[int, int, int, int]:
    """(magic, images, stack bytes, status) of the end-of-run record, zeros when there is none."""
    import struct

    return struct.unpack("<4I", raw[-16:]) if len(raw) >= 16 else (0, 0, 0, 0)


def _records(raw: bytes, n: int, out_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's int8 output, its instruction count and the words after it (a profile) from the UART stream
    (trailer excluded); without `out_bytes` a record is the output and the count alone."""
    rows = np.frombuffer(raw[:-16], np.int8).reshape(n, -1)
    ob = rows.shape[1] - 4 if out_bytes is None else out_bytes
    instructions = rows[:, ob : ob + 4].copy().view("<u4").reshape(n).astype(np.int64)
    extra = rows[:, ob + 4 :].copy().view("<u4").reshape(n, -1).astype(np.int64)
    return rows[:, :ob].copy(), instructions, extra


def _output_bytes(project_dir: Path) -> int | None:
    """TF_OUTPUT_BYTES of the project's model.h (None when there is none)."""
    import re

    header = project_dir / "model.h"
    found = re.search(r"#define TF_OUTPUT_BYTES (\d+)", header.read_text()) if header.is_file() else None
    return int(found.group(1)) if found else None


def read_outputs(project_dir: str | Path, elf_stem: str = "firmware") -> np.ndarray:
    """The int8 outputs (N, output bytes) of the last emulator run of a firmware project (`run_<elf>/output.bin`)."""
    raw = (Path(project_dir) / f"run_{elf_stem}" / "output.bin").read_bytes()
    magic, images, _, _ = _trailer(raw)
    if magic != TRAILER_MAGIC:
        raise EmulatorError(f"firmware: {project_dir}: the last run has no end-of-run record")
    return _records(raw, images, _output_bytes(Path(project_dir)))[0]
