"""Summary of a multirun over device SRAM × flash: what (width, resolution) TinyNAS chose per cell.

Reads every job of a multirun directory (its `.hydra/config.yaml` for the device, its `context.json` for
what the pipeline produced), prints a table, draws heatmaps of the chosen width and resolution per
(SRAM, flash) cell (MCUNet's figure), writes `sweep_summary.{md,json,png}` into the multirun directory and
logs them to MLflow as a `sweep-summary` run. Runs at the end of a sweep as a Hydra callback (`SweepSummary`,
registered in conf/config.yaml) or by hand: `python -m tinyflow.sweep_summary <multirun dir>`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tinyflow.context import CONTEXT_FILE, RunContext, atomic_write_text
from tinyflow.errors import TinyflowError

log = logging.getLogger(__name__)

# metrics copied from each job's context into the table when present
TABLE_METRICS = ("search_val_accuracy", "search_peak_sram_bytes")
# what was deployed, from each job's report.json (the run report): column -> (report key, scale)
DEPLOYED = {
    "acc_float_%": ("accuracy_float", 100.0),
    "acc_int8_%": ("accuracy_int8", 100.0),
    "sram_used_kb": ("sram_used", 1 / 1024),
    "flash_used_kb": ("flash_bytes", 1 / 1024),
    "macs_m": ("macs", 1e-6),
    "latency_ms": ("latency_ms", 1.0),
    "fits": ("fits", None),
}


def _job_dirs(root: Path) -> list[Path]:
    return sorted({p.parent.parent for p in root.glob("**/.hydra/config.yaml")}, key=lambda p: str(p))


def _device_of(job: Path) -> dict[str, Any]:
    cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
    dev = cfg.get("device") or {}
    out: dict[str, Any] = {}
    for key in ("name", "sram_kb", "flash_kb"):
        try:
            out[key] = dev.get(key)
        except Exception:  # an interpolation we cannot resolve outside the job
            out[key] = None
    return out


def collect(root: str | Path) -> list[dict[str, Any]]:
    """One row per job: device, chosen (w, r), fitting share, mean MACs, and metrics the job recorded."""
    root = Path(root)
    if not root.is_dir():
        raise TinyflowError(f"sweep summary: {root} is not a directory; give a multirun output dir.")
    rows = []
    for job in _job_dirs(root):
        row: dict[str, Any] = {
            "job": job.relative_to(root).as_posix() or ".",
            **_device_of(job),
            **dict.fromkeys(("width_mult", "resolution", "fit_share", "mean_macs_m", "completed")),
        }
        ctx_path = job / CONTEXT_FILE
        if ctx_path.exists():
            ctx = RunContext.load(job)
            stats = ctx.space_stats or {}
            row.update(
                width_mult=ctx.width_mult,
                resolution=ctx.resolution,
                fit_share=stats.get("chosen_fit_share"),
                mean_macs_m=(stats["chosen_mean_macs"] / 1e6) if stats.get("chosen_mean_macs") else None,
                completed=",".join(ctx.completed),
            )
            for m in TABLE_METRICS:
                if m in ctx.metrics:
                    row[m] = ctx.metrics[m]
        row.update(_deployed(job))
        row["status"] = "ok" if row.get("width_mult") is not None else "failed / nothing fits"
        rows.append(row)
    if not rows:
        raise TinyflowError(
            f"sweep summary: {root} holds no Hydra jobs (no */.hydra/config.yaml). Give the multirun dir "
            "printed by `python -m tinyflow -m ...` (under outputs/multirun/)."
        )
    return rows


def _deployed(job: Path) -> dict[str, Any]:
    """The report's deployed figures of one job, in the table's units; {} when the job wrote no report."""
    from tinyflow.report import REPORT_JSON

    path = job / REPORT_JSON
    if not path.exists():
        return {}
    try:
        report = json.loads(path.read_text())
    except ValueError:
        return {}
    if report.get("sram_used") is None:  # the report stores the arena and the live peak; the device holds the arena
        report["sram_used"] = report.get("arena_bytes") or report.get("peak_sram_bytes")
    out: dict[str, Any] = {}
    for col, (key, scale) in DEPLOYED.items():
        value = report.get(key)
        out[col] = value if value is None or scale is None else round(float(value) * scale, 2)
    return out


def grids(rows: list[dict[str, Any]]) -> tuple[list[float], list[float], dict[str, Any]]:
    """Heatmap grids (rows: flash, columns: SRAM) of chosen width, resolution and mean MACs; NaN = no fit."""
    import numpy as np

    srams = sorted({float(r["sram_kb"]) for r in rows if r.get("sram_kb") is not None})
    flashes = sorted({float(r["flash_kb"]) for r in rows if r.get("flash_kb") is not None})
    out = {k: np.full((len(flashes), len(srams)), np.nan) for k in ("width", "resolution", "mean MACs (M)")}
    for r in rows:
        if r.get("sram_kb") is None or r.get("flash_kb") is None or r.get("width_mult") is None:
            continue
        i, j = flashes.index(float(r["flash_kb"])), srams.index(float(r["sram_kb"]))
        out["width"][i, j] = r["width_mult"]
        out["resolution"][i, j] = r["resolution"]
        out["mean MACs (M)"][i, j] = round(r["mean_macs_m"], 1) if r.get("mean_macs_m") else math.nan
    # a full-pipeline sweep also maps what was deployed
    for title, col in (("int8 accuracy (%)", "acc_int8_%"), ("SRAM used (kB)", "sram_used_kb")):
        if any(r.get(col) is not None for r in rows):
            out[title] = np.full((len(flashes), len(srams)), np.nan)
            for r in rows:
                if r.get(col) is not None and r.get("sram_kb") is not None and r.get("flash_kb") is not None:
                    out[title][flashes.index(float(r["flash_kb"])), srams.index(float(r["sram_kb"]))] = r[col]
    return srams, flashes, out


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table_markdown(rows: list[dict[str, Any]]) -> str:
    cols = ["job", "sram_kb", "flash_kb", "width_mult", "resolution", "fit_share", "mean_macs_m"]
    cols += [m for m in (*TABLE_METRICS, *DEPLOYED) if any(r.get(m) is not None for r in rows)] + ["status"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=lambda r: (r.get("sram_kb") or 0, r.get("flash_kb") or 0)):
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def summarize(root: str | Path, tracking: Any = None, print_table: bool = True) -> dict[str, Any]:
    """Write the table, heatmaps and JSON into `root`; log them to MLflow (`tracking`: a tracking config node)."""
    import matplotlib.pyplot as plt

    from tinyflow.search.plots import heatmap_figure

    root = Path(root)
    rows = collect(root)
    srams, flashes, g = grids(rows)
    md = table_markdown(rows)
    atomic_write_text(root / "sweep_summary.md", md)
    atomic_write_text(root / "sweep_summary.json", json.dumps(rows, indent=2, default=str))
    fig = heatmap_figure(srams, flashes, g)
    fig.suptitle("per device (SRAM × flash): TinyNAS space choice and what was deployed", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(root / "sweep_summary.png", dpi=120)
    if print_table:
        _print(rows)
    run_id = _log_mlflow(root, md, fig, rows, tracking)
    plt.close(fig)
    return {"rows": rows, "srams": srams, "flashes": flashes, "grids": g, "mlflow_run_id": run_id}


# the console table's columns with short headers (an 80-column terminal); the markdown has every column
_CONSOLE_COLUMNS = {
    "sram_kb": "SRAM kB",
    "flash_kb": "flash kB",
    "width_mult": "w",
    "resolution": "r",
    "mean_macs_m": "MACs M",
    "acc_float_%": "fp32 %",
    "acc_int8_%": "int8 %",
    "sram_used_kb": "SRAM used",
    "flash_used_kb": "flash used",
    "fits": "fits",
}


def _short(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:.3g}" if isinstance(v, float) else _fmt(v)


def _print(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="sweep summary: TinyNAS choice and deployed result per device")
    cols = [c for c in _CONSOLE_COLUMNS if any(r.get(c) is not None for r in rows)]
    for c in cols:
        t.add_column(_CONSOLE_COLUMNS[c], justify="right")
    t.add_column("status")
    for r in sorted(rows, key=lambda r: (r.get("sram_kb") or 0, r.get("flash_kb") or 0)):
        t.add_row(*(_short(r.get(c)) for c in cols), "ok" if r["status"] == "ok" else "failed")
    Console().print(t)


def _log_mlflow(root: Path, md: str, fig: Any, rows: list[dict[str, Any]], tracking: Any) -> str | None:
    from tinyflow.tracking import MlflowTracker

    node = tracking if tracking is not None else _tracking_of_jobs(root)
    if node is not None and not str(node.get("_target_", "")).endswith("MlflowTracker"):
        return None  # tracking=none
    tracker = MlflowTracker(
        uri=node.get("uri") if node else None,
        experiment=node.get("experiment", "tinyflow") if node else "tinyflow",
        log_config=False,
    )
    with tracker.job(
        None, {"run_name": f"sweep-summary {root.name}", "kind": "sweep_summary", "multirun_dir": str(root)}
    ):
        tracker.log_text(md, "sweep_summary.md")
        tracker.log_artifact(str(root / "sweep_summary.json"))
        tracker.log_figure(fig, "sweep_summary.png")
        tracker.log_metrics({"jobs": float(len(rows)), "jobs_fit": float(sum(r["status"] == "ok" for r in rows))})
        return tracker.parent_id


def _tracking_of_jobs(root: Path) -> Any:
    for job in _job_dirs(root):
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        if "tracking" in cfg:
            import tinyflow  # noqa: F401  (registers the config resolvers)

            return OmegaConf.create(OmegaConf.to_container(cfg.tracking, resolve=True))
    return None


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, summarise it (a failure here never fails the sweep)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            summarize(config.hydra.sweep.dir, config.get("tracking"))
        except Exception as exc:  # the jobs are done and logged; the summary must not turn them into a failure
            log.warning("sweep summary skipped: %s", exc)
