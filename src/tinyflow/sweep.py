"""Summary of a multirun over device SRAM × flash: what (width, resolution) TinyNAS chose per cell.

Reads every job of a multirun directory (its `.hydra/config.yaml` for the device, its `context.json` for
what the pipeline produced), prints a table, draws heatmaps of the chosen width and resolution per
(SRAM, flash) cell beside the deployed int8 accuracy and SRAM used (MCUNet's figure: width follows flash,
resolution follows SRAM), checks those two trends, writes `sweep_summary.{md,json,png}` into the multirun directory and
logs them to MLflow as a `sweep-summary` run. Runs at the end of a sweep as a Hydra callback (`SweepSummary`,
registered in conf/config.yaml) or by hand: `python -m tinyflow.sweep_summary <multirun dir>`. Each accuracy comes
with its 95 % interval, and neighbouring budgets whose accuracies cannot be told apart are noted
(`tinyflow.sweep_summary`).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tinyflow.context import CONTEXT_FILE, RunContext, atomic_write_text
from tinyflow.errors import TinyflowError
from tinyflow.sweep_summary import adjacent_notes, report_intervals, search_interval, with_intervals

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
            row.update(search_interval(ctx.metrics))
        row.update(_deployed(job))
        # every job that finishes writes its report (tinyflow.pipeline); one without it stopped on an error
        row["status"] = "ok" if _has_report(job) else f"failed: {_failure(job)}"
        rows.append(row)
    if not rows:
        raise TinyflowError(
            f"sweep summary: {root} holds no Hydra jobs (no */.hydra/config.yaml). Give the multirun dir "
            "printed by `python -m tinyflow -m ...` (under outputs/multirun/)."
        )
    return rows


def _has_report(job: Path) -> bool:
    from tinyflow.report import REPORT_JSON

    return (job / REPORT_JSON).exists()


def _failure(job: Path) -> str:
    """Why a job stopped: the error its log recorded (`tinyflow.app` writes `failed: <reason>`), or `no context`."""
    log_file = job / "tinyflow.log"
    reason = ""
    if log_file.exists():
        for line in log_file.read_text(errors="replace").splitlines():
            if "] - failed: " in line:
                reason = line.split("] - failed: ", 1)[1].strip()
    return reason or "no reason in its tinyflow.log"


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
    return out | report_intervals(report)


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


def given(v: Any) -> str:
    """A budget or size as the user gave it (12.5, 1024.5, 64): no rounding, no exponent."""
    if isinstance(v, float) and not isinstance(v, bool):
        return str(int(v)) if v.is_integer() else repr(v)
    return _fmt(v)


#: columns printed as given (the device budgets in kB), never rounded to a few digits
_AS_GIVEN = ("sram_kb", "flash_kb")


def table_markdown(rows: list[dict[str, Any]]) -> str:
    cols = ["job", "sram_kb", "flash_kb", "width_mult", "resolution", "fit_share", "mean_macs_m"]
    cols += with_intervals([m for m in (*TABLE_METRICS, *DEPLOYED) if any(r.get(m) is not None for r in rows)], rows)
    cols += ["status"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=lambda r: (r.get("sram_kb") or 0, r.get("flash_kb") or 0)):
        lines.append("| " + " | ".join((given if c in _AS_GIVEN else _fmt)(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def grid_markdown(rows: list[dict[str, Any]]) -> str:
    """The sweep as one table over the grid (rows: SRAM, columns: flash): chosen cell, int8 accuracy, SRAM used."""
    srams = sorted({r["sram_kb"] for r in rows if r.get("sram_kb") is not None})
    flashes = sorted({r["flash_kb"] for r in rows if r.get("flash_kb") is not None})
    at = {(r.get("sram_kb"), r.get("flash_kb")): r for r in rows}
    lines = [
        "| SRAM \\ flash | " + " | ".join(f"{given(f)} kB" for f in flashes) + " |",
        "|---|" + "---|" * len(flashes),
    ]
    for s in srams:
        cells = [_grid_cell(at.get((s, f))) for f in flashes]
        lines.append(f"| {given(s)} kB | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _grid_cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "—"
    status = str(r.get("status", ""))
    if status != "ok":
        known = "no reason in" not in status
        return "failed" if known and "fit" not in status else "nothing fits"
    # a job without a space/search stage (e.g. stages=[train,...] on a given arch) has no chosen (w, r)
    text = "ok" if r.get("width_mult") is None else f"w{r['width_mult']:g} r{r['resolution']}"
    if r.get("acc_int8_%") is not None:
        text += f": {r['acc_int8_%']:.1f} %"
    if r.get("sram_used_kb") is not None:
        text += f", {r['sram_used_kb']:.0f} kB SRAM"
    return text


def trends(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What a sweep over a binding grid should show (MCUNet): resolution follows SRAM, width follows flash.

    `resolution_follows_sram`: at every flash, the chosen resolution never falls as SRAM grows (jobs where nothing
    fits are skipped); `width_follows_flash`: the same for width along flash at every SRAM; `distinct_choices`: how
    many different (width, resolution) cells were chosen.
    """
    ok = [r for r in rows if r.get("width_mult") is not None and r.get("sram_kb") is not None]

    def monotone(key: str, along: str, fixed: str) -> bool:
        for v in {r[fixed] for r in ok}:
            line = sorted((r for r in ok if r[fixed] == v), key=lambda r: r[along])
            if any(a[key] > b[key] for a, b in pairwise(line)):
                return False
        return True

    return {
        "distinct_choices": len({(r["width_mult"], r["resolution"]) for r in ok}),
        "resolution_follows_sram": monotone("resolution", "sram_kb", "flash_kb"),
        "width_follows_flash": monotone("width_mult", "flash_kb", "sram_kb"),
    }


# the figure's panels: grid name -> (title, colour map); width and resolution first (MCUNet's figure), then what
# was deployed (a full-pipeline sweep) or, for a `space`-only sweep, the mean MACs of the chosen cell
_PANELS = {
    "width": ("chosen width (follows flash)", "viridis"),
    "resolution": ("chosen resolution (follows SRAM)", "viridis"),
    "int8 accuracy (%)": ("int8 accuracy (%)", "magma"),
    "SRAM used (kB)": ("SRAM used (kB)", "cividis"),
}


def summary_figure(srams: list[float], flashes: list[float], g: dict[str, Any]) -> Any:
    """One row of heatmaps over the SRAM × flash grid (columns: SRAM, rows: flash), every cell annotated."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = [n for n in _PANELS if n in g]
    if "int8 accuracy (%)" not in g:
        names.append("mean MACs (M)")
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        title, cmap = _PANELS.get(name, (name, "viridis"))
        grid = g[name]
        colours = plt.get_cmap(cmap).with_extremes(bad="#dddddd")  # grey: no job fitted there
        im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap=colours, aspect="auto")
        ax.set_xticks(range(len(srams)), [given(s) for s in srams])
        ax.set_yticks(range(len(flashes)), [given(f) for f in flashes])
        ax.set_xlabel("device SRAM (kB)")
        ax.set_ylabel("device flash (kB)")
        ax.set_title(title, fontsize=10)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                v = grid[i, j]
                label, colour = ("no fit", "black") if np.isnan(v) else (f"{v:.3g}", _text_colour(im, v))
                ax.text(j, i, label, ha="center", va="center", color=colour, fontsize=9, fontweight="bold")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("per device (SRAM × flash): what TinyNAS chose and what was deployed", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def _text_colour(im: Any, value: float) -> str:
    """Black on a light cell, white on a dark one."""
    r, g, b, _ = im.cmap(im.norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def summarize(root: str | Path, tracking: Any = None, print_table: bool = True) -> dict[str, Any]:
    """Write the tables, figure and JSON into `root`; log them to MLflow (`tracking`: a tracking config node)."""
    import matplotlib.pyplot as plt

    root = Path(root)
    rows = collect(root)
    srams, flashes, g = grids(rows)
    found = trends(rows)
    md = table_markdown(rows) + "\n" + grid_markdown(rows) + "\n" + _trends_text(found) + "\n"
    notes = adjacent_notes(rows)
    md += ("\n" + notes) if notes else ""
    atomic_write_text(root / "sweep_summary.md", md)
    atomic_write_text(root / "sweep_summary.json", json.dumps(rows, indent=2, default=str))
    fig = summary_figure(srams, flashes, g)
    fig.savefig(root / "sweep_summary.png", dpi=120)
    if print_table:
        _print(rows)
        print(grid_markdown(rows) + _trends_text(found))
        if notes:
            print(notes, end="")
    run_id = _log_mlflow(root, md, fig, rows, tracking, found)
    plt.close(fig)
    return {"rows": rows, "srams": srams, "flashes": flashes, "grids": g, "trends": found, "mlflow_run_id": run_id}


def _trends_text(found: dict[str, Any]) -> str:
    yes = {True: "yes", False: "NO"}
    return (
        f"{found['distinct_choices']} distinct (width, resolution) choices; resolution non-decreasing in SRAM at "
        f"every flash: {yes[found['resolution_follows_sram']]}; width non-decreasing in flash at every SRAM: "
        f"{yes[found['width_follows_flash']]}"
    )


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
        t.add_row(
            *((given if c in _AS_GIVEN else _short)(r.get(c)) for c in cols), "ok" if r["status"] == "ok" else "failed"
        )
    Console().print(t)


def _log_mlflow(
    root: Path, md: str, fig: Any, rows: list[dict[str, Any]], tracking: Any, found: dict[str, Any]
) -> str | None:
    """Log the summary as its own run of the configured tracker (the jobs' `tracking:` node when none is given);
    returns the run id, or None for a tracker without runs (`tracking=none`)."""
    from hydra.utils import instantiate

    node = tracking if tracking is not None else _tracking_of_jobs(root)
    if node is None:
        node = {"_target_": "tinyflow.tracking.MlflowTracker"}
    tracker = instantiate(node)
    tags = {"run_name": f"sweep-summary {root.name}", "kind": "sweep_summary", "multirun_dir": str(root)}
    with tracker.job(None, tags) as run:
        run.log_text(md, "sweep_summary.md")
        run.log_artifact(str(root / "sweep_summary.json"))
        run.log_figure(fig, "sweep_summary.png")
        run.log_metrics(
            {
                "jobs": float(len(rows)),
                "jobs_fit": float(sum(r["status"] == "ok" for r in rows)),
                **{k: float(v) for k, v in found.items()},
            }
        )
        return tracker.parent_id


def _tracking_of_jobs(root: Path) -> Any:
    for job in _job_dirs(root):
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        if "tracking" in cfg:
            import tinyflow  # noqa: F401  (registers the config resolvers)

            return OmegaConf.create(OmegaConf.to_container(cfg.tracking, resolve=True))
    return None


def failed_jobs(root: str | Path) -> dict[str, str]:
    """`{job folder: reason}` of the multirun's jobs that failed for a reason other than "nothing fits" (read from
    the `job_failed.json` that `tinyflow.app.clean_errors` leaves in a failed job's folder)."""
    from tinyflow.app import JOB_FAILED_FILE

    root = Path(root)
    failed = {}
    for marker in sorted(root.glob(f"**/{JOB_FAILED_FILE}")):
        try:
            record = json.loads(marker.read_text())
        except (OSError, ValueError) as exc:
            record = {"nothing_fits": False, "error": f"unreadable {JOB_FAILED_FILE}: {exc}"}
        if not record.get("nothing_fits", False):
            failed[marker.parent.relative_to(root).as_posix() or "."] = str(record.get("error", "?"))
    return failed


def exit_if_jobs_failed(config: DictConfig) -> None:
    """End the multirun with exit code 1 when a job failed for a reason other than "nothing fits" (a cluster's
    scheduler sees the failure); `sweep.fail_on_error=false` keeps exit code 0 (the failures stay in the table)."""
    switch = OmegaConf.select(config, "sweep.fail_on_error", default=True)
    failed = failed_jobs(config.hydra.sweep.dir)
    if not failed or switch is False:
        return
    from tinyflow.console import error_paragraph

    jobs = "; ".join(f"job {job}: {reason.splitlines()[0] if reason else '?'}" for job, reason in failed.items())
    error_paragraph(
        f"{len(failed)} job(s) of the multirun in {config.hydra.sweep.dir} failed: {jobs}. Each job's folder has its "
        "log. Jobs where nothing fits the device do not count; `sweep.fail_on_error=false` makes failed jobs exit 0."
    )
    sys.exit(1)


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, summarise it (a failure of the summary never fails the sweep),
    then exit 1 if a job failed for a reason other than "nothing fits" (`exit_if_jobs_failed`). At its start it
    prints the threads per job (`tinyflow.threads.announce_sweep`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from tinyflow.threads import announce_sweep

        announce_sweep(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from tinyflow.threads import sweep_finished

        sweep_finished()
        try:
            summarize(config.hydra.sweep.dir, config.get("tracking"))
        except Exception as exc:  # the jobs are done and logged; the summary must not turn them into a failure
            log.warning("sweep summary skipped: %s", exc)
        exit_if_jobs_failed(config)


class FailedJobsExit(Callback):
    """Hydra callback for apps without a sweep summary (`tinyflow.analyze`): the multirun's exit code only."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        exit_if_jobs_failed(config)
