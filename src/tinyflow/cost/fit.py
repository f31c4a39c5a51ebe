"""Fit MicroNets latency/energy coefficients from measurements: `python -m tinyflow.cost.fit rows.csv`.

The CSV has a header and one row per measured model: `model`, either `macs` or `ops` (ops = 2·MACs), and
`latency_ms`; optionally `energy_mj`. It prints the least-squares line latency_ms = intercept + slope · Mops
with its r² (and the same for energy, through the origin), and the YAML lines to paste into
`conf/device/<device>.yaml`.

With `--core <core>` the CSV is `benchmarks/bench_firmware.py --core <core>`'s (an `instructions` column): it fits
instructions = a · MACs + b (b ≥ 0, else through the origin), prints r² and the Spearman rank correlation between
that estimate and the measurements, and with `--write` stores the line as the core's fit
(`tinyflow.cost.core_fits`), which device files name with `latency_fit: <core>`.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyflow.cost.core_fits import FITS_PATH, CoreFit, store_fit
from tinyflow.errors import ConfigError, DataError


@dataclass(frozen=True)
class LinearFit:
    slope: float
    intercept: float
    r2: float
    n: int


def fit_line(x: np.ndarray, y: np.ndarray, through_origin: bool = False) -> LinearFit:
    """Least squares y = intercept + slope·x (intercept 0 when `through_origin`), with r²."""
    if len(x) < 2:
        raise DataError(f"fit: need at least 2 measured rows, got {len(x)}")
    if through_origin:
        slope = float(x @ y / (x @ x))
        intercept = 0.0
    else:
        a = np.stack([np.ones_like(x), x], axis=1)
        (intercept, slope), *_ = np.linalg.lstsq(a, y, rcond=None)
    pred = intercept + slope * x
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return LinearFit(float(slope), float(intercept), r2, len(x))


def read_rows(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray | None]:
    """(model names, Mops, latency_ms, energy_mj or None) from the CSV; a clear error naming a bad row."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"fit: '{p}' is not a file; give a CSV with columns model, macs|ops, latency_ms[, energy_mj]")
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        if "latency_ms" not in cols or not ({"macs", "ops"} & cols):
            raise DataError(
                f"fit: '{p}' has columns {sorted(cols)}; it needs latency_ms and one of macs / ops (and model)"
            )
        names, mops, lat, energy = [], [], [], []
        for i, row in enumerate(reader, start=2):
            try:
                ops = float(row["ops"]) if row.get("ops") not in (None, "") else 2.0 * float(row["macs"])
                lat.append(float(row["latency_ms"]))
                if "energy_mj" in cols:
                    energy.append(float(row["energy_mj"]))
            except (TypeError, ValueError) as exc:
                raise DataError(f"fit: '{p}' line {i}: cannot read a number ({exc})") from None
            names.append(row.get("model") or f"row{i}")
            mops.append(ops / 1e6)
    e = np.asarray(energy) if energy else None
    return names, np.asarray(mops), np.asarray(lat), e


def read_instructions(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(MACs, instructions) of a bench_firmware CSV; a DataError naming what is missing."""
    p = Path(path)
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"macs", "instructions"} <= set(reader.fieldnames or []):
            raise DataError(f"fit --core: '{p}' needs columns macs and instructions (benchmarks/bench_firmware.py)")
        rows = [(float(r["macs"]), float(r["instructions"])) for r in reader]
    a = np.asarray(rows, float).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def fit_core(path: str | Path, core: str, cpi: float, machine: str, command: str) -> CoreFit:
    """The core's fit from a bench_firmware CSV: instructions = a · MACs + b with b ≥ 0 (a negative intercept is
    refitted through the origin: a model of no MACs takes no negative time), r², Spearman."""
    from scipy.stats import spearmanr

    macs, insns = read_instructions(path)
    line = fit_line(macs, insns)
    if line.intercept < 0:
        line = fit_line(macs, insns, through_origin=True)
    rho = float(spearmanr(line.slope * macs + line.intercept, insns).statistic)
    a, b = round(line.slope, 5), round(line.intercept)
    return CoreFit(core, a, b, round(line.r2, 4), round(rho, 4), line.n, cpi, machine, command)


def _main_core(args: argparse.Namespace) -> int:
    from tinyflow.firmware.linker import target

    tgt = target(args.core)
    command = (
        f"benchmarks/bench_firmware.py --core {args.core} --csv {args.csv}; "
        f"python -m tinyflow.cost.fit {args.csv} --core {args.core}"
    )
    fit = fit_core(args.csv, args.core, args.cpi, tgt.machine or "none", command)
    print(
        f"{args.core}: instructions = {fit.instructions_per_mac:.4f} * MACs + {fit.intercept_instructions:,.0f} "
        f"over {fit.n} subnets   "
        f"r2 = {fit.r2:.4f}   Spearman(estimate, measured) = {fit.spearman:.4f}"
    )
    if args.write:
        store_fit(fit)
        print(f"stored in {FITS_PATH}; a device file uses it with `latency_fit: {args.core}`")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyflow.cost.fit", description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="CSV: model, macs or ops, latency_ms[, energy_mj]")
    parser.add_argument(
        "--through-origin",
        action="store_true",
        help="fit latency with no intercept (device files hold only intercepts >= 0)",
    )
    parser.add_argument("--core", help="fit a bench_firmware CSV's instructions per MAC for this core")
    parser.add_argument("--cpi", type=float, default=1.0, help="with --core: the assumed cycles per instruction")
    parser.add_argument("--write", action="store_true", help="with --core: store the fit in core_fits.yaml")
    args = parser.parse_args(argv)
    if args.core:
        try:
            return _main_core(args)
        except (DataError, ConfigError, OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        names, mops, lat, energy = read_rows(args.csv)
        fit = fit_line(mops, lat, through_origin=args.through_origin)
        efit = fit_line(mops, energy, through_origin=True) if energy is not None else None
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{fit.n} models, {min(mops):.2f}-{max(mops):.2f} Mops")
    print(f"latency_ms = {fit.intercept:.4f} + {fit.slope:.6f} * Mops   r2 = {fit.r2:.4f}")
    if efit is not None:
        print(f"energy_mj  = {efit.slope:.6f} * Mops   r2 = {efit.r2:.4f}")
    worst = int(np.argmax(np.abs(lat - (fit.intercept + fit.slope * mops))))
    print(f"largest residual: {names[worst]} ({lat[worst]:.2f} ms measured)")
    print("\n# paste into conf/device/<device>.yaml")
    print(f"latency_ms_per_mop: {fit.slope:.6g}")
    print(f"latency_intercept_ms: {fit.intercept:.6g}")
    if efit is not None:
        print(f"energy_mj_per_mop: {efit.slope:.6g}")
    how = ", through the origin" if args.through_origin else ""
    print(
        f"coefficient_source: fitted by tinyflow.cost.fit on {Path(args.csv).name} ({fit.n} models{how}, "
        f"r2 {fit.r2:.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
