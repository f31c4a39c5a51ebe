"""Output of an analysis: the rich per-layer table and summary, and the memory-profile plot."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from tinyflow.analyze.conventions import COST_MODEL_FLASH
from tinyflow.memory.plan import ExecutionPlan


def _kib(v: float | None) -> str:
    return "—" if v is None else f"{v / 1024:,.1f}"


def layer_table(analysis: dict[str, Any]) -> Table:
    table = Table(title=f"{analysis['network']} — {analysis['scheduler']} plan, per layer", show_lines=False)
    for col, just in (
        ("#", "right"),
        ("block", "right"),
        ("name", "left"),
        ("op", "left"),
        ("output shape", "left"),
        ("working set KiB", "right"),
        ("MACs", "right"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    peak = analysis["peak_live_bytes"]
    for i, row in enumerate(analysis["per_layer"]):
        ws = row.get("working_set_bytes")
        style = "bold red" if ws == peak and row.get("name") == analysis["peak_layer"] else None
        table.add_row(
            str(i),
            str(row.get("block", "")),
            str(row.get("name", "")),
            str(row.get("op", "")),
            "×".join(str(d) for d in row.get("output_shape", [])),
            _kib(ws),
            f"{row.get('macs', 0):,}",
            style=style,
        )
    return table


def summary_table(analysis: dict[str, Any]) -> Table:
    a = analysis
    table = Table(title="summary", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("note")
    mem = a["memory"]
    conv = (
        f"rule={mem['rule']} inplace_depthwise={mem['inplace_depthwise']} count_input={mem['count_input']} "
        f"dtype_bytes={mem['dtype_bytes']}"
    )
    table.add_row("peak_live", f"{_kib(a['peak_live_bytes'])} KiB", f"at {a['peak_layer']} ({conv})")
    frag = a["arena_bytes"] / a["peak_live_bytes"] - 1 if a["peak_live_bytes"] else 0.0
    note = f"{a['arena_algorithm']}, +{100 * frag:.2f} % over peak"
    if mem["rule"] == "layer_local":
        note += " (layer_local leaves held tensors out: not a lower bound)"
    table.add_row("arena", f"{_kib(a['arena_bytes'])} KiB", note)
    if a.get("persistent_bytes") is not None:  # a runtime's persistent tail (memory.persistent)
        total = f"arena + tail = {_kib(a['arena_total_bytes'])} KiB (estimated for a 32-bit MCU)"
        table.add_row("runtime tail", f"{_kib(a['persistent_bytes'])} KiB", total)
    if a.get("sram_overhead_bytes") is not None:  # the firmware's own SRAM beside the arena
        parts = ", ".join(f"{k} {v:,}" for k, v in a["sram_overhead_parts"].items())
        table.add_row(
            "firmware overhead", f"{_kib(a['sram_overhead_bytes'])} KiB", f"{parts} B ({a['sram_overhead_model']})"
        )
        table.add_row("SRAM (arena + overhead)", f"{_kib(a['sram_total_bytes'])} KiB", "what the firmware needs")
    sram_ok = "[green]fits[/green]" if a["fits_sram"] else "[red]does NOT fit[/red]"
    what = "arena + overhead" if a.get("sram_total_bytes") is not None else "arena"
    table.add_row("device SRAM", f"{_kib(a['sram_budget_bytes'])} KiB", f"{a['device']}: {what} {sram_ok}")
    flash_ok = "[green]fits[/green]" if a["fits_flash"] else "[red]does NOT fit[/red]"
    source = f" ({a['flash_source']})" if a.get("flash_source") not in (None, COST_MODEL_FLASH) else ""
    table.add_row(
        "flash", f"{_kib(a['flash_bytes'])} KiB", f"of {_kib(a['flash_budget_bytes'])} KiB: {flash_ok}{source}"
    )
    table.add_row("MACs", f"{a['macs'] / 1e6:,.2f} M", f"params {a['params']:,}")
    if a.get("latency_ms") is not None:
        table.add_row("latency (est.)", f"{a['latency_ms']:,.1f} ms", str(a.get("latency_source", "")))
    if a.get("energy_mj") is not None:
        source = "cost model: energy per op, or the device's run-mode power x latency"
        table.add_row("energy (est.)", f"{a['energy_mj']:,.2f} mJ", source)
    extra = [k for k in a.get("scheduler_figures", []) if a.get(k) is not None]
    if extra:
        table.add_row(f"{a['scheduler']} plan", "", ", ".join(f"{k} {a[k]}" for k in extra))
    if a.get("layer_peak_live_bytes") is not None:
        table.add_row(
            "vs layer",
            f"{a['peak_reduction']:.2f}× lower peak",
            f"layer peak {_kib(a['layer_peak_live_bytes'])} KiB; MACs {100 * a['extra_macs_ratio']:+.2f} %",
        )
    return table


def print_tables(analysis: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=None if Console().is_terminal else 150)
    console.print(layer_table(analysis))
    console.print(summary_table(analysis))


def profile_figure(plan: ExecutionPlan, layer: ExecutionPlan | None, sram_bytes: int | None, title: str) -> Any:
    """Bar per layer of the working set (KiB): the plan, the layer plan overlaid, the device SRAM as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # x positions by layer name, so the two plans' bars line up op by op
    names = [r["name"] for r in (layer.per_layer if layer is not None else plan.per_layer)]
    for i, r in enumerate(plan.per_layer):  # an op only the plan has (e.g. rnnpool) goes after the op before it
        if r["name"] not in names:
            prev = plan.per_layer[i - 1]["name"] if i else None
            names.insert(names.index(prev) + 1 if prev in names else len(names), r["name"])
    pos = {n: i for i, n in enumerate(names)}
    fig, ax = plt.subplots(figsize=(min(40, max(8, len(names) * 0.12)), 4.5))
    if layer is not None:
        ax.bar(
            [pos[r["name"]] for r in layer.per_layer],
            [r["working_set_bytes"] / 1024 for r in layer.per_layer],
            color="tab:gray",
            alpha=0.45,
            label=f"layer (peak {layer.peak_live_bytes / 1024:,.0f} KiB)",
        )
    ax.bar(
        [pos[r["name"]] for r in plan.per_layer],
        [r["working_set_bytes"] / 1024 for r in plan.per_layer],
        color="tab:blue",
        alpha=0.8,
        label=f"{plan.scheduler} (peak {plan.peak_live_bytes / 1024:,.0f} KiB)",
    )
    if sram_bytes:
        ax.axhline(
            sram_bytes / 1024, color="tab:red", linestyle="--", label=f"device SRAM {sram_bytes / 1024:,.0f} KiB"
        )
    ax.set_xlabel("layer (execution order)")
    ax.set_ylabel("working set (KiB)")
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig
