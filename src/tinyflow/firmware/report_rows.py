"""The `firmware` report section of backend `c`: the firmware's memory from the map file beside the device's
budgets, the emulator's checks and instructions. The backend returns it as a `ReportSection`; the report renders it
without knowing where it came from."""

from __future__ import annotations

from typing import Any

from tinyflow.contracts import ReportSection

SECTION_TITLE = "firmware"


def _kib(v: float) -> str:
    return f"{v / 1024:,.1f} KiB"


def _against(used: float, budget: int | None) -> str:
    return "" if not budget else f"of {_kib(budget)} ({100 * used / budget:.0f} % used)"


def firmware_rows(fw: dict[str, Any] | None, sram_budget: int | None, flash_budget: int | None) -> list[tuple]:
    """(what, value, against / note) rows; none without a firmware section."""
    if not fw:
        return []
    where = f"{fw.get('target')} {fw.get('opt')}, {fw.get('rounding', 'tflite')} rounding, qemu {fw.get('machine')}"
    if not fw.get("built"):
        return [("firmware", "written, not built", fw.get("skipped", ""))]
    fits = fw.get("fits")
    # the firmware holds what the plan's budget reserves room for (stack, scratch, I/O): it is measured against the
    # whole device, as the linker script is
    sram_total = fw.get("device_sram_bytes") or sram_budget
    flash_total = fw.get("device_flash_bytes") or flash_budget
    return [
        ("firmware", "built and run", where),
        ("firmware arena", _kib(fw["arena_bytes"]), f"map file; the plan's arena {fw['plan_arena_bytes']:,} B"),
        (
            "firmware SRAM",
            _kib(fw["sram_bytes"]),
            f"bss {fw['bss_bytes']:,} + data {fw['data_bytes']:,} + stack {fw['stack_bytes']:,} B "
            + _against(fw["sram_bytes"], sram_total),
        ),
        ("firmware flash", _kib(fw["flash_bytes"]), _against(fw["flash_bytes"], flash_total)),
        ("firmware fits (linker)", "yes" if fits else "NO", fw.get("overflow") or f"device {fw.get('device')}"),
        ("bit-exact vs oracle", f"{fw['bit_exact']} / {fw['images']}", "test images, NumPy integer oracle"),
        (
            "top-1 = onnxruntime",
            "—" if fw.get("top1_agreement_onnxruntime") is None else f"{100 * fw['top1_agreement_onnxruntime']:.1f} %",
            f"{fw['images']} test images",
        ),
        (
            "instructions / inference",
            f"{fw['instructions_per_inference']:,}",
            f"{fw['instructions_per_mac']:.2f} per MAC (qemu -icount: instructions, not cycles)",
        ),
    ]


def firmware_section(fw: dict[str, Any], sram_budget: int | None, flash_budget: int | None) -> ReportSection:
    """The rows as backend `c`'s report section."""
    return ReportSection(
        SECTION_TITLE, [tuple(str(c) for c in row) for row in firmware_rows(fw, sram_budget, flash_budget)]
    )
