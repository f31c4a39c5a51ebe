"""Run a firmware ELF on qemu (mps2 board, semihosting): feed int8 images, read outputs, instructions, stack.

All images go through one qemu run (input.bin in, output.bin out). `-icount shift=0` makes the virtual clock
advance 1 ns per instruction, so the harness's timer gives instructions, deterministically (in steps of 40, the
25 MHz timer's period): instructions, not cycles — qemu does not model pipeline timing.
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


def run_images(elf: Path, machine: str, inputs: np.ndarray, out_bytes: int, timeout_s: float = 600) -> RunResult:
    """Run `elf` on `machine` over int8 `inputs` (N, input_bytes)."""
    import time

    work = elf.parent / f"run_{elf.stem}"
    work.mkdir(exist_ok=True)
    for name in ("output.bin", "stats.bin"):
        (work / name).unlink(missing_ok=True)
    np.ascontiguousarray(inputs, np.int8).tofile(work / "input.bin")
    cmd = ["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none", "-serial", "none"]
    cmd += ["-semihosting-config", "enable=on,target=native", "-icount", "shift=0,align=off,sleep=off"]
    cmd += ["-kernel", str(elf.resolve())]
    start = time.perf_counter()
    try:
        res = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise EmulatorError(f"firmware: qemu ran {elf.name} for more than {timeout_s:.0f} s; stopped") from None
    wall = time.perf_counter() - start
    if res.returncode != 0 or not (work / "stats.bin").is_file():
        raise EmulatorError(
            f"firmware: qemu ({machine}) did not run {elf} to the end (exit {res.returncode}; 3 = a fault): "
            f"{(res.stderr or res.stdout).strip()[:500]}"
        )
    n = len(inputs)
    raw = np.fromfile(work / "output.bin", np.int8)
    rec = out_bytes + 4
    if raw.size != n * rec:
        raise EmulatorError(f"firmware: expected {n} outputs of {out_bytes} B from qemu, got {raw.size} B")
    rows = raw.reshape(n, rec)
    outputs = rows[:, :out_bytes].copy()
    instructions = rows[:, out_bytes:].copy().view("<u4").reshape(n).astype(np.int64)
    images, stack = np.fromfile(work / "stats.bin", "<u4")[:2]
    if int(images) != n:
        raise EmulatorError(f"firmware: qemu ran {int(images)} of {n} images")
    return RunResult(outputs, instructions, int(stack), wall)
