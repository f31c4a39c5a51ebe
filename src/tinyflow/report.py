"""The run report: what the user takes home — accuracy, memory against the device, cost, fits or not, files.

`write_report(cfg, ctx)` runs after the last stage (whatever stages ran: a figure nobody produced shows as "—").
It prints a rich table, writes `report.md` and `report.json` atomically in the job's output dir, and logs the
figures as metrics and tags on the MLflow parent run.

Where a figure comes from (one source each):
- memory, flash, MACs, params, latency, energy: the `schedule` stage's analysis of the deployed network
  (`ctx.plan`; its `source` says whether the int8 ONNX or the network's description was planned);
- accuracy: the float model and the int8 model on the test split (stage `quantize`), each with its 95 % Wilson
  interval over the test images, and the int8-vs-float drop with its Newcombe interval — "cannot be told apart"
  when that interval holds 0 (`tinyflow.confidence`). A figure no stage produced shows as "—";
- whatever the backend measured (stage `deploy`): its report sections (`tinyflow.contracts.ReportSection`, kept in
  `ctx.extra["report_sections"]`), rendered as they are, one table each, without naming a backend; its metrics
  and details in `report.json` under their own names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig
from rich.table import Table

from tinyflow.confidence import DIFFERENCE_METHOD, METHOD, difference, interval
from tinyflow.context import RunContext, atomic_write_text
from tinyflow.contracts import ReportSection
from tinyflow.errors import TinyflowError

log = logging.getLogger(__name__)

DASH = "—"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"

# the float model's test accuracy (0..1), as `quantize` measures it beside the int8 one
FLOAT_ACCURACY_KEY = "accuracy_float"


@dataclass
class Figures:
    """The report's numbers; None where no stage produced it."""

    device: str | None = None
    sram_budget_bytes: int | None = None
    flash_budget_bytes: int | None = None
    arch: str | None = None
    resolution: int | None = None
    scheduler: str | None = None
    accuracy_float: float | None = None
    accuracy_int8: float | None = None
    test_images: int | None = None  # the test split the accuracies were measured on: their intervals' n
    accuracy_float_ci95_low: float | None = None  # 95 % Wilson intervals (tinyflow.confidence)
    accuracy_float_ci95_high: float | None = None
    accuracy_int8_ci95_low: float | None = None
    accuracy_int8_ci95_high: float | None = None
    accuracy_drop_int8: float | None = None  # float − int8, and its 95 % Newcombe interval
    accuracy_drop_int8_ci95_low: float | None = None
    accuracy_drop_int8_ci95_high: float | None = None
    peak_sram_bytes: float | None = None
    arena_bytes: float | None = None
    flash_bytes: float | None = None
    macs: float | None = None
    params: float | None = None
    latency_ms: float | None = None
    energy_mj: float | None = None
    memory_source: str | None = None
    schedule_used: str | None = None  # the plan the scheduler chose (`layer`, `patch 2x2 over 3 blocks`)
    schedule_reason: str | None = None  # and why (the patch scheduler's policy, docs/design.md §7)
    sram_overhead_bytes: float | None = None  # the firmware's own SRAM beside the arena (scratch, I/O, stack, ...)
    sram_overhead_note: str | None = None  # its parts and model
    sram_total_bytes: float | None = None  # arena + overhead: the plan's SRAM figure
    linker_fits: bool | None = None  # a firmware backend's link for the device (None: no link)
    firmware_built: bool | None = None  # a firmware backend built its image (False: written, not built)

    @property
    def drop_told_apart(self) -> bool | None:
        """Whether the int8 model's accuracy can be told apart from the float model's (the drop's interval does not
        hold 0); None without the interval."""
        low, high = self.accuracy_drop_int8_ci95_low, self.accuracy_drop_int8_ci95_high
        return None if low is None or high is None else not low <= 0.0 <= high

    @property
    def sram_used(self) -> float | None:
        """What the device must hold: arena + the firmware's overhead, else the placed arena, else the peak."""
        if self.sram_total_bytes is not None:
            return self.sram_total_bytes
        return self.arena_bytes if self.arena_bytes is not None else self.peak_sram_bytes

    @property
    def fits_sram(self) -> bool | None:
        if self.sram_used is None or self.sram_budget_bytes is None:
            return None
        return self.sram_used <= self.sram_budget_bytes

    @property
    def fits_flash(self) -> bool | None:
        if self.flash_bytes is None or self.flash_budget_bytes is None:
            return None
        return self.flash_bytes <= self.flash_budget_bytes

    @property
    def fits(self) -> bool | None:
        """The linker's verdict when a backend linked the firmware for the device, else the plan's."""
        if self.linker_fits is not None:
            return self.linker_fits
        parts = (self.fits_sram, self.fits_flash)
        if False in parts:
            return False
        return None if None in parts else True


# ---------------------------------------------------------------------------------------------- gathering
def gather(cfg: DictConfig, ctx: RunContext) -> Figures:
    """Collect the report's figures: memory, flash and cost from the `schedule` stage's analysis (`ctx.plan`),
    accuracy and the backend's checks from the metrics; the device's budgets from the config."""
    m = ctx.metrics
    f = Figures()
    try:
        from tinyflow.plugins import build_device

        device = build_device(cfg)
        f.device, f.sram_budget_bytes, f.flash_budget_bytes = (
            device.name,
            device.sram_budget_bytes,
            device.flash_budget_bytes,
        )
    except (TinyflowError, KeyError, TypeError, AttributeError) as exc:
        log.warning("report: no device (%s)", exc)
    if ctx.arch:
        width = (ctx.arch.get("genome") or {}).get("width_mult")
        f.arch = str(ctx.arch.get("name", "arch")) + (f" w{width:g}" if isinstance(width, int | float) else "")
        f.resolution = ctx.arch.get("resolution")
    f.accuracy_float = m.get(FLOAT_ACCURACY_KEY)
    f.accuracy_int8 = m.get("accuracy_int8")
    _accuracy_intervals(f, m)
    plan = ctx.plan or {}
    f.memory_source = plan.get("source")
    f.scheduler = plan.get("scheduler")
    f.schedule_used, f.schedule_reason = plan.get("schedule_used"), plan.get("schedule_reason")
    f.peak_sram_bytes = plan.get("peak_live_bytes")
    f.arena_bytes = plan.get("arena_bytes")
    f.sram_overhead_bytes, f.sram_total_bytes = plan.get("sram_overhead_bytes"), plan.get("sram_total_bytes")
    if plan.get("sram_overhead_parts"):
        parts = ", ".join(f"{k} {v:,}" for k, v in plan["sram_overhead_parts"].items())
        f.sram_overhead_note = f"{parts} B; {plan.get('sram_overhead_model', '')}"
    f.linker_fits = (ctx.extra.get("deploy_checks") or {}).get("linker_fits")
    f.firmware_built = (ctx.extra.get("deploy_checks") or {}).get("built")
    f.flash_bytes = plan.get("flash_bytes")
    f.macs = plan.get("macs")
    f.params = plan.get("params")
    f.latency_ms = plan.get("latency_ms")
    f.energy_mj = plan.get("energy_mj")
    return f


def _accuracy_intervals(f: Figures, m: dict[str, float]) -> None:
    """The accuracies' intervals as `quantize` logged them; computed from the test-set size where a context has the
    size but not the intervals (one written before they were logged)."""
    n = m.get("test_images")
    f.test_images = None if n is None else int(n)
    for name in ("accuracy_float", "accuracy_int8"):
        low, high = m.get(f"{name}_ci95_low"), m.get(f"{name}_ci95_high")
        iv = interval(getattr(f, name), n) if low is None or high is None else None
        if iv is not None:
            low, high = iv.low, iv.high
        setattr(f, f"{name}_ci95_low", low)
        setattr(f, f"{name}_ci95_high", high)
    if f.accuracy_float is None or f.accuracy_int8 is None:
        return
    f.accuracy_drop_int8 = f.accuracy_float - f.accuracy_int8
    low, high = m.get("accuracy_drop_int8_ci95_low"), m.get("accuracy_drop_int8_ci95_high")
    if (low is None or high is None) and f.test_images:
        _, low, high = difference(f.accuracy_float, f.test_images, f.accuracy_int8, f.test_images)
    f.accuracy_drop_int8_ci95_low, f.accuracy_drop_int8_ci95_high = low, high


def sections(ctx: RunContext) -> list[ReportSection]:
    """The backend's report sections, as the deploy stage kept them."""
    return [ReportSection.from_dict(d) for d in ctx.extra.get("report_sections", [])]


def backend_details(ctx: RunContext) -> dict[str, object]:
    """The backend's metrics and details (for report.json), under their own names."""
    metrics = {name: ctx.metrics[name] for name in ctx.extra.get("backend_metrics", []) if name in ctx.metrics}
    return metrics | {name: ctx.extra[name] for name in ctx.extra.get("backend_details", []) if name in ctx.extra}


# ---------------------------------------------------------------------------------------------- formatting
def _kib(v: float | None) -> str:
    return DASH if v is None else f"{v / 1024:,.1f} KiB"


def _pct(v: float | None) -> str:
    return DASH if v is None else f"{100 * v:.2f} %"


def _ci(low: float | None, high: float | None, n: int | None) -> str:
    """`95 % CI 85.7–91.3, Wilson, n = 500` ("" without the interval)."""
    if low is None or high is None:
        return ""
    return f"95 % CI {100 * low:.1f}–{100 * high:.1f}, {METHOD}" + ("" if n is None else f", n = {n:,}")


def _drop_note(f: Figures) -> str:
    """The drop's interval and whether it tells int8 and float apart."""
    low, high = f.accuracy_drop_int8_ci95_low, f.accuracy_drop_int8_ci95_high
    if low is None or high is None:
        return "no test-set size: no interval"
    verdict = "a real difference" if f.drop_told_apart else "inside the interval: cannot be told apart"
    return f"95 % CI {100 * low:+.1f}…{100 * high:+.1f}, {DIFFERENCE_METHOD}: {verdict}"


def _num(v: float | None, fmt: str, unit: str = "") -> str:
    return DASH if v is None else f"{v:{fmt}}{unit}"


def _yes_no(v: bool | None) -> str:
    return DASH if v is None else ("yes" if v else "NO")


def _against(used: float | None, budget: int | None) -> str:
    if used is None or budget is None:
        return DASH
    return f"{_kib(budget)} ({100 * used / budget:.0f} % used)"


def rows(f: Figures, files: dict[str, str]) -> list[tuple[str, str, str]]:
    """(what, value, against / note) rows of the report."""
    n = f.test_images
    out = [
        ("device", f.device or DASH, ""),
        ("arch", DASH if f.arch is None else f"{f.arch} @ {f.resolution}²", ""),
        ("scheduler", f.scheduler or DASH, f"memory from: {f.memory_source}" if f.memory_source else ""),
        *([("schedule", f.schedule_used or DASH, f.schedule_reason or "")] if f.schedule_reason else []),
        (
            "accuracy (float)",
            _pct(f.accuracy_float),
            "; ".join(p for p in ("test split", _ci(f.accuracy_float_ci95_low, f.accuracy_float_ci95_high, n)) if p),
        ),
        ("accuracy (int8)", _pct(f.accuracy_int8), _ci(f.accuracy_int8_ci95_low, f.accuracy_int8_ci95_high, n)),
        *(
            [("int8 drop (float − int8)", f"{100 * f.accuracy_drop_int8:+.2f} points", _drop_note(f))]
            if f.accuracy_drop_int8 is not None
            else []
        ),
        ("peak SRAM (live)", _kib(f.peak_sram_bytes), _against(f.peak_sram_bytes, f.sram_budget_bytes)),
        ("arena", _kib(f.arena_bytes), _against(f.arena_bytes, f.sram_budget_bytes)),
        *(
            [
                ("firmware overhead", _kib(f.sram_overhead_bytes), f.sram_overhead_note or ""),
                (
                    "SRAM (arena + overhead)",
                    _kib(f.sram_total_bytes),
                    _against(f.sram_total_bytes, f.sram_budget_bytes),
                ),
            ]
            if f.sram_total_bytes is not None
            else []
        ),
        ("flash", _kib(f.flash_bytes), _against(f.flash_bytes, f.flash_budget_bytes)),
        ("MACs", _num(None if f.macs is None else f.macs / 1e6, ",.2f", " M"), ""),
        ("est. latency", _num(f.latency_ms, ",.1f", " ms"), "cost model, on the device"),
        ("est. energy", _num(f.energy_mj, ",.2f", " mJ"), "cost model, on the device"),
        ("fits SRAM", _yes_no(f.fits_sram), "plan: arena + overhead" if f.sram_total_bytes is not None else ""),
        ("fits flash", _yes_no(f.fits_flash), ""),
        ("fits", _yes_no(f.fits), _fits_note(f)),
    ]
    out += [(f"file: {name}", path, "") for name, path in files.items()]
    return out


def _fits_note(f: Figures) -> str:
    """Whose verdict the top-level "fits" is, and the other one when they disagree (never silently)."""
    if f.linker_fits is None:
        return "the plan's verdict; the firmware was NOT built (no link)" if f.firmware_built is False else ""
    plan = None if f.fits_sram is None or f.fits_flash is None else f.fits_sram and f.fits_flash
    if plan is None or plan == f.linker_fits:
        return "the linker's verdict (firmware linked for the device)"
    return f"the linker's verdict; the plan says {_yes_no(plan)} — they DISAGREE (see the firmware section)"


def _files(ctx: RunContext) -> dict[str, str]:
    out = Path(ctx.output_dir)
    files = {
        "output dir": str(out),
        "model": ctx.model_checkpoint,
        "onnx (float)": ctx.onnx_path,
        "onnx (int8)": ctx.onnx_int8_path,
        "report": str(out / REPORT_MD),
        "context": str(out / "context.json"),
    }
    return {k: v for k, v in files.items() if v}


def _cells(row: tuple[str, ...]) -> tuple[str, str, str]:
    return (row[0], row[1], row[2] if len(row) > 2 else "")


def _md_table(table_rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| | value | against / note |", "| --- | --- | --- |"]
    return lines + ["| {} | {} | {} |".format(*_cells(r)) for r in table_rows]


def to_markdown(table_rows: list[tuple[str, str, str]], title: str, extra: Sequence[ReportSection] = ()) -> str:
    """The report table, then one table (and its notes) per section."""
    lines = [f"# {title}", "", *_md_table(table_rows)]
    for section in extra:
        lines += ["", f"## {section.title}", "", *_md_table(section.rows)]
        lines += [line for note in section.notes for line in ("", note)]
    return "\n".join(lines) + "\n"


def to_rich(table_rows: list[tuple[str, ...]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_column("against / note")
    for row in table_rows:
        a, b, c = _cells(row)
        style = "bold green" if b == "yes" else "bold red" if b == "NO" else None
        table.add_row(a, b, c, style=style if a.startswith("fits") else None)
    return table


def metrics_of(f: Figures) -> dict[str, float]:
    """The report's numbers as MLflow metrics (only those that exist)."""
    names = (
        "accuracy_float",
        "accuracy_int8",
        "test_images",
        "accuracy_float_ci95_low",
        "accuracy_float_ci95_high",
        "accuracy_int8_ci95_low",
        "accuracy_int8_ci95_high",
        "accuracy_drop_int8",
        "accuracy_drop_int8_ci95_low",
        "accuracy_drop_int8_ci95_high",
        "peak_sram_bytes",
        "arena_bytes",
        "sram_overhead_bytes",
        "sram_total_bytes",
        "flash_bytes",
        "macs",
        "params",
        "latency_ms",
        "energy_mj",
        "sram_budget_bytes",
        "flash_budget_bytes",
    )
    out = {n: float(getattr(f, n)) for n in names if getattr(f, n) is not None}
    if f.fits is not None:
        out["fits"] = float(f.fits)
    return out


# ---------------------------------------------------------------------------------------------- entry point
def write_report(cfg: DictConfig, ctx: RunContext) -> str:
    """Print, write (`report.md`, `report.json`) and log the run's summary; returns the markdown."""
    from tinyflow.console import console, print_files
    from tinyflow.parent_run import log_deployed_model, log_pipeline_figure, ui_link
    from tinyflow.tracking import active_tracker

    figures = gather(cfg, ctx)
    files = _files(ctx)
    table_rows = rows(figures, files)
    title = f"tinyflow report — {', '.join(ctx.completed) or 'no stages finished'}"
    backend_sections = sections(ctx)
    markdown = to_markdown(table_rows, title, backend_sections)
    out = Path(ctx.output_dir)
    atomic_write_text(out / REPORT_MD, markdown)
    summary = {k: v for k, v in figures.__dict__.items()}
    summary.update(fits=figures.fits, fits_sram=figures.fits_sram, fits_flash=figures.fits_flash)
    summary.update(
        accuracy_interval=f"95 % {METHOD} score interval", accuracy_drop_int8_told_apart=figures.drop_told_apart
    )
    summary.update(stages=list(ctx.completed), files=files)
    summary.update({k: v for k, v in backend_details(ctx).items() if k not in summary})
    summary.update(backend=ctx.extra.get("backend"), sections=[sec.to_dict() for sec in backend_sections])
    atomic_write_text(out / REPORT_JSON, json.dumps(summary, indent=2, sort_keys=True, default=str))
    console.print(to_rich([r for r in table_rows if not r[0].startswith("file: ")], title))
    print_files(files)  # whole paths on their own lines: a table cuts them to its width (no terminal: 80)
    for section in backend_sections:
        console.print(to_rich(section.rows, section.title))

    tracker = active_tracker()
    try:
        tracker.log_parent_metrics(metrics_of(figures))
        tracker.set_tags(
            {
                "fits": {True: "yes", False: "no", None: "unknown"}[figures.fits],
                "report": str(out / REPORT_MD),
                **({"arch": figures.arch} if figures.arch else {}),
                **({"memory_source": figures.memory_source} if figures.memory_source else {}),
            }
        )
        tracker.log_artifact(str(out / REPORT_MD))
        tracker.log_artifact(str(out / REPORT_JSON))
        log_pipeline_figure(ctx, tracker, figures.sram_budget_bytes, figures.flash_budget_bytes)
        log_deployed_model(ctx, tracker, figures)
        link = ui_link(tracker)
        if link:
            print_files({"MLflow UI": link})
    except Exception as exc:  # a tracking hiccup must not hide the report the user already has on disk
        log.warning("report: could not log to the tracker (%s)", exc)
    return markdown
