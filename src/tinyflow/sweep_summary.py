"""`python -m tinyflow.sweep_summary <multirun dir>`: the sweep summary (table, heatmaps, MLflow run) by hand."""

from __future__ import annotations

import argparse
import sys

from tinyflow.errors import TinyflowError
from tinyflow.sweep import summarize


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tinyflow.sweep_summary", description=__doc__)
    ap.add_argument("multirun_dir", help="a multirun output dir, e.g. outputs/multirun/2026-01-01_12-00-00")
    ap.add_argument("--no-mlflow", action="store_true", help="write the files only, log nothing")
    args = ap.parse_args(argv)
    try:
        from omegaconf import OmegaConf

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
