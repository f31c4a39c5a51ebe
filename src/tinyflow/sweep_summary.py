"""`python -m tinyflow.sweep_summary <multirun dir>`: the sweep summary (table, heatmaps, MLflow run) by hand.

Also the summary's accuracy intervals (issue 26; `tinyflow.sweep` calls them): each accuracy column of the table
with its 95 % Wilson interval (`acc_int8_ci95_%`: `85.7–91.3`, from the job's report.json, or its context for the
search's val accuracy), and a note for each pair of neighbouring budgets (SRAM at one flash, flash at one SRAM) whose
int8 accuracies cannot be told apart (Newcombe's interval of the difference holds 0: `tinyflow.confidence`).
"""

from __future__ import annotations

import argparse
import sys
from itertools import pairwise
from typing import Any

from tinyflow.confidence import difference, interval
from tinyflow.errors import TinyflowError

#: an accuracy column of the table -> the column of its 95 % interval, printed right after it
INTERVAL_COLUMNS = {
    "search_val_accuracy": "search_val_ci95_%",
    "acc_float_%": "acc_float_ci95_%",
    "acc_int8_%": "acc_int8_ci95_%",
}


def _span(low: float | None, high: float | None) -> str | None:
    return None if low is None or high is None else f"{100 * low:.1f}–{100 * high:.1f}"


def _ci(values: dict[str, Any], key: str, n: Any) -> str | None:
    """The interval of `values[key]` as logged (`<key>_ci95_low/high`), else from `n`; None without either."""
    low, high = values.get(f"{key}_ci95_low"), values.get(f"{key}_ci95_high")
    if low is None or high is None:
        iv = interval(values.get(key), n)
        low, high = (None, None) if iv is None else (iv.low, iv.high)
    return _span(low, high)


def report_intervals(report: dict[str, Any]) -> dict[str, Any]:
    """The deployed accuracies' interval columns and the test-set size, from a job's report.json."""
    n = report.get("test_images")
    out: dict[str, Any] = {} if n is None else {"test_images": int(n)}
    for col, key in (("acc_float_ci95_%", "accuracy_float"), ("acc_int8_ci95_%", "accuracy_int8")):
        span = _ci(report, key, n)
        if span is not None:
            out[col] = span
    return out


def search_interval(metrics: dict[str, Any]) -> dict[str, Any]:
    """The search's val accuracy interval column and the val-set size, from a job's context metrics."""
    n = metrics.get("search_val_images")
    span = _ci(metrics, "search_val_accuracy", n)
    out: dict[str, Any] = {} if span is None else {"search_val_ci95_%": span}
    return out | ({} if n is None else {"val_images": int(n)})


def with_intervals(cols: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """`cols` with each accuracy's interval column right after it (where some row has one)."""
    out = []
    for c in cols:
        out.append(c)
        ci = INTERVAL_COLUMNS.get(c)
        if ci is not None and any(r.get(ci) is not None for r in rows):
            out.append(ci)
    return out


def _neighbours(rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(what varies, a, b) for budgets next to each other: SRAM at each flash, then flash at each SRAM."""
    ok = [r for r in rows if r.get("acc_int8_%") is not None and r.get("test_images")]
    out = []
    for along, fixed in (("sram_kb", "flash_kb"), ("flash_kb", "sram_kb")):
        for v in sorted({r.get(fixed) for r in ok if r.get(fixed) is not None}):
            line = sorted((r for r in ok if r.get(fixed) == v and r.get(along) is not None), key=lambda r: r[along])
            out += [(along, a, b) for a, b in pairwise(line)]
    return out


def adjacent_notes(rows: list[dict[str, Any]]) -> str:
    """One line per pair of neighbouring budgets whose int8 test accuracies cannot be told apart (Newcombe's 95 %
    interval of the difference holds 0); "" when every neighbour differs or no job has a test-set size."""
    from tinyflow.sweep import given

    lines = []
    for along, a, b in _neighbours(rows):
        pa, pb = a["acc_int8_%"] / 100, b["acc_int8_%"] / 100
        d, low, high = difference(pb, int(b["test_images"]), pa, int(a["test_images"]))
        if low <= 0.0 <= high:
            where = (
                f"SRAM {given(a['sram_kb'])} → {given(b['sram_kb'])} kB at flash {given(a['flash_kb'])} kB"
                if along == "sram_kb"
                else f"flash {given(a['flash_kb'])} → {given(b['flash_kb'])} kB at SRAM {given(a['sram_kb'])} kB"
            )
            lines.append(
                f"- {where}: int8 {a['acc_int8_%']:.1f} % → {b['acc_int8_%']:.1f} % ({100 * d:+.1f} points, 95 % CI "
                f"{100 * low:+.1f}…{100 * high:+.1f}, Newcombe): cannot be told apart"
            )
    if not lines:
        return ""
    head = "Neighbouring budgets whose int8 test accuracies cannot be told apart (95 % intervals, Wilson per job):"
    return "\n".join([head, *lines]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tinyflow.sweep_summary", description=__doc__)
    ap.add_argument("multirun_dir", help="a multirun output dir, e.g. outputs/multirun/2026-01-01_12-00-00")
    ap.add_argument("--no-mlflow", action="store_true", help="write the files only, log nothing")
    args = ap.parse_args(argv)
    try:
        from omegaconf import OmegaConf

        from tinyflow.sweep import summarize  # here: tinyflow.sweep imports this module's interval helpers

        tracking = OmegaConf.create({"_target_": "tinyflow.tracking.NullTracker"}) if args.no_mlflow else None
        out = summarize(args.multirun_dir, tracking)
    except TinyflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.multirun_dir}/sweep_summary.md, .json, .png"
        + (f"; MLflow run {out['mlflow_run_id']}" if out["mlflow_run_id"] else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
