"""The per-layer profile of backend `c` (`backend.profile=true`) as the run's report section, failed checks and
MLflow metrics.

The firmware result carries the profile (`firmware/profile.py`: `profile`, `profile_by_kind`, `profile_check`,
`profile_figure`); report.json has it under `firmware`. This module turns it into the `firmware profile` report
section (instructions per op kind, the counting method's check, the five layers with the most instructions), the
check's failures (failed checks, as the firmware's own) and per-op-kind metrics (`firmware.profile.<kind>.*`). The
report renders the section without knowing where it came from.
"""

from __future__ import annotations

import re
from typing import Any

from tinyflow.contracts import ReportSection

SECTION_TITLE = "firmware profile"
METRIC_PREFIX = "firmware.profile"
TOP_LAYERS = 5


def _per_mac(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _share(instructions: float, whole: float) -> str:
    return f"{100 * instructions / whole:.1f} % of the inference" if whole else ""


def check_line(check: dict[str, Any]) -> str:
    """The method's check in one line: Σ points against the whole inference, the calibration loop."""
    if "error" in check:
        return str(check["error"])
    lo, hi = check["calibration_measured"]
    measured = f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"
    within = "within" if check["within_overhead"] else "OUTSIDE"
    exact = "exact" if check["calibration_exact"] else "NOT exact"
    return (
        f"Σ of {check['points']} points {check['sum_of_points']:,} vs whole inference "
        f"{check['whole_instructions']:,} instructions: difference {check['difference']:,}, {within} the stated "
        f"overhead {check['stated_overhead']:,}; calibration loop {check['calibration_expected']:,} measured "
        f"{measured} ({exact}, ± one {check['tick']}-instruction tick)"
    )


def check_passed(check: dict[str, Any]) -> bool:
    return "error" not in check and bool(check.get("within_overhead")) and bool(check.get("calibration_exact"))


def profile_failures(fw: dict[str, Any]) -> list[str]:
    """The profile's failed checks, one line each (none when no profile was measured, or when it passed)."""
    check = fw.get("profile_check")
    if not check or check_passed(check):
        return []
    return [f"per-layer profile: {check_line(check)}"]


def profile_rows(fw: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, value, note) rows: the check, one per op kind (most instructions first), the top layers."""
    check = fw.get("profile_check")
    if not check:
        why = fw.get("not_built") or fw.get("not_run") or fw.get("skipped") or "the firmware did not run"
        return [("profile", "not measured", str(why))]
    out = [("profile check", "passed" if check_passed(check) else "FAILED", check_line(check))]
    whole = float(check.get("whole_instructions") or 0)
    for r in fw.get("profile_by_kind") or []:
        layers = f"{r['layers']} layer{'s' if r['layers'] != 1 else ''}"
        note = f"{layers}, {r['macs']:,} MACs, {_per_mac(r['instructions_per_mac'])} instructions / MAC"
        share = _share(r["instructions"], whole)
        out.append((f"op kind: {r['kind']}", f"{r['instructions']:,}", f"{note}; {share}" if share else note))
    top = sorted(fw.get("profile") or [], key=lambda r: -r["instructions"])[:TOP_LAYERS]
    for i, r in enumerate(top, 1):
        note = f"{r['kind']}, {r['macs']:,} MACs, {_per_mac(r['instructions_per_mac'])} instructions / MAC"
        share = _share(r["instructions"], whole)
        out.append((f"top {i}: {r['layer']}", f"{r['instructions']:,}", f"{note}; {share}" if share else note))
    return out


def profile_report_section(fw: dict[str, Any]) -> ReportSection:
    """The rows as backend `c`'s `firmware profile` report section."""
    notes = []
    if fw.get("profile_check") and "error" not in fw["profile_check"]:
        figure = fw.get("profile_figure")
        notes.append(
            "Instructions per layer (qemu -icount, the harness's timer read before and after each layer call, "
            f"mean over {fw.get('images', '?')} test images), summed per op kind; each read adds about "
            f"{fw['profile_check']['point_cost']} instructions to this profiled build."
            + (f" Figure (instructions against MACs per layer): {figure}." if figure else "")
        )
    return ReportSection(SECTION_TITLE, profile_rows(fw), notes)


def _metric_name(kind: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", kind)


def profile_metrics(fw: dict[str, Any]) -> dict[str, float]:
    """Per op kind `firmware.profile.<kind>.instructions`, `.macs`, `.layers`, `.instructions_per_mac` (kinds with
    MACs), and the check's `firmware.profile.check.difference`, `.within_overhead`, `.calibration_exact` (0/1)."""
    out: dict[str, float] = {}
    for r in fw.get("profile_by_kind") or []:
        head = f"{METRIC_PREFIX}.{_metric_name(r['kind'])}"
        out[f"{head}.instructions"] = float(r["instructions"])
        out[f"{head}.macs"] = float(r["macs"])
        out[f"{head}.layers"] = float(r["layers"])
        if r["instructions_per_mac"] is not None:
            out[f"{head}.instructions_per_mac"] = float(r["instructions_per_mac"])
    check = fw.get("profile_check") or {}
    if check and "error" not in check:
        out[f"{METRIC_PREFIX}.check.difference"] = float(check["difference"])
        out[f"{METRIC_PREFIX}.check.within_overhead"] = float(check["within_overhead"])
        out[f"{METRIC_PREFIX}.check.calibration_exact"] = float(check["calibration_exact"])
    return out
