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


def _core_row(fw: dict[str, Any]) -> tuple:
    """The core the firmware was built for, its -mcpu flags and the QEMU machine (and when that machine's core is
    not the target's: Armv6-M code on the Cortex-M3 board)."""
    flags = fw.get("cpu_flags") or "—"
    where = fw.get("emulation") or (f"qemu {fw['machine']}" if fw.get("machine") else "no emulated board")
    return ("core", str(fw.get("target")), f"{flags}; {where}")


def _overhead_row(fw: dict[str, Any]) -> tuple | None:
    pred, meas = fw.get("sram_overhead_predicted"), fw.get("sram_overhead_measured")
    if not pred:
        return None
    parts = ", ".join(f"{k} {pred[k]:,}" for k in ("scratch", "io", "runtime", "stack"))
    if not meas:
        return ("firmware overhead (predicted)", f"{pred['total']:,} B", f"{parts} B; {pred['source']}")
    ok = "covers" if meas["total"] <= pred["total"] else "does NOT cover"
    note = f"predicted {pred['total']:,} B ({parts}) {ok} it; map file + painted stack"
    return ("firmware overhead (measured)", f"{meas['total']:,} B", note)


def _padding_row(fw: dict[str, Any]) -> list[tuple]:
    """What the padded im2col rows cost in flash and whether the generator kept them (none without padding)."""
    pad = fw.get("row_padding") or {}
    if not pad.get("bytes"):
        return []
    if pad.get("kept"):
        why = pad.get("why") or "the device's flash has room"
        return [("im2col row padding", f"+{pad['bytes']:,} B flash", f"kept: {why}")]
    return [("im2col row padding", "dropped", f"+{pad['bytes']:,} B flash would not fit: {pad.get('why', '')}")]


def firmware_rows(fw: dict[str, Any] | None, sram_budget: int | None, flash_budget: int | None) -> list[tuple]:
    """(what, value, against / note) rows; none without a firmware section."""
    if not fw:
        return []
    fails = fw.get("failed_checks") or []
    failed = [("checks FAILED", str(len(fails)), "; ".join(fails))] if fails else []
    if not fw.get("built"):
        return [("firmware", "NOT BUILT", fw.get("not_built") or fw.get("skipped", "")), _core_row(fw), *failed]
    where = f"{fw.get('target')} {fw.get('opt')}, {fw.get('rounding', 'tflite')} rounding"
    fits = fw.get("fits")
    # the firmware holds what the plan's budget reserves room for (stack, scratch, I/O): it is measured against the
    # whole device, as the linker script is
    sram_total = fw.get("device_sram_bytes") or sram_budget
    flash_total = fw.get("device_flash_bytes") or flash_budget
    linked = [
        _core_row(fw),
        ("firmware arena", _kib(fw["arena_bytes"]), f"map file; the plan's arena {fw['plan_arena_bytes']:,} B"),
        ("firmware flash", _kib(fw["flash_bytes"]), _against(fw["flash_bytes"], flash_total)),
        ("firmware fits (linker)", "yes" if fits else "NO", fw.get("overflow") or f"device {fw.get('device')}"),
        *_padding_row(fw),
    ]
    if not fw.get("ran", "bit_exact" in fw):  # a result saved before `ran` existed ran when it has outputs
        return [("firmware", "built, not run", where), *linked, *failed]
    overhead = _overhead_row(fw)
    ref = str(fw.get("reference_check", ""))
    key = "tflm" if ref.startswith("TF Lite Micro") else "onnxruntime"
    agree = fw.get(f"top1_agreement_{key}")
    return [
        ("firmware", "built and run", where),
        *linked,
        (
            "firmware SRAM",
            _kib(fw["sram_bytes"]),
            f"bss {fw['bss_bytes']:,} + data {fw['data_bytes']:,} + stack {fw['stack_bytes']:,} B "
            + _against(fw["sram_bytes"], sram_total),
        ),
        *([overhead] if overhead else []),
        ("bit-exact vs oracle", f"{fw['bit_exact']} / {fw['images']}", "test images, NumPy integer oracle"),
        (
            "reference runtime",
            "NOT RUN" if agree is None else f"top-1 {100 * agree:.1f} %",
            ref
            + ("" if agree is None else f"; max {fw.get(f'max_diff_steps_{key}')} int8 steps, {fw['images']} images"),
        ),
        (
            "instructions / inference",
            f"{fw['instructions_per_inference']:,}",
            f"{fw['instructions_per_mac']:.2f} per MAC (qemu -icount: instructions, not cycles)",
        ),
        *failed,
    ]


def firmware_section(fw: dict[str, Any], sram_budget: int | None, flash_budget: int | None) -> ReportSection:
    """The rows as backend `c`'s report section."""
    notes = [fw["not_built"]] if fw.get("not_built") else []
    rows = [tuple(str(c) for c in row) for row in firmware_rows(fw, sram_budget, flash_budget)]
    return ReportSection(SECTION_TITLE, rows, notes)
