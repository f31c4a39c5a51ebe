"""Rich console output: stage start/end lines, a final summary table, and clean error paragraphs."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

console = Console(stderr=True, highlight=False)


def stage_started(name: str, index: int, total: int) -> None:
    console.rule(f"[bold cyan]stage {index}/{total}: {name}")


def stage_finished(name: str, seconds: float) -> None:
    console.print(f"[green]✓[/green] {name} finished in {seconds:.1f} s")


def stage_skipped(name: str) -> None:
    console.print(f"[yellow]↷[/yellow] {name} already finished (resume) — skipped")


def summary_table(rows: list[dict[str, Any]], title: str = "tinyflow run") -> Table:
    """One row per stage: name, status, wall time."""
    table = Table(title=title)
    table.add_column("stage")
    table.add_column("status")
    table.add_column("wall time", justify="right")
    for row in rows:
        seconds = row.get("seconds")
        table.add_row(row["stage"], row["status"], "—" if seconds is None else f"{seconds:.1f} s")
    return table


def print_files(files: dict[str, str]) -> None:
    """One `name: path` line per file, never cut or folded (no ellipsis, whatever the width), so a log piped into
    a file or CI shows every path whole and `grep outputs/runs` finds it."""
    for name, path in files.items():
        console.print(f"{name}: {path}", markup=False, highlight=False, soft_wrap=True, overflow="ignore", crop=False)


def error_paragraph(message: str, where: str | None = None) -> None:
    """Print a user-facing error as one paragraph (no traceback)."""
    body = escape(message) if where is None else f"{escape(message)}\n\n[dim]{escape(where)}[/dim]"
    console.print(Panel(body, title="[bold red]tinyflow: error", border_style="red", expand=False))
