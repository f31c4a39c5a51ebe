"""The parent run's figure "memory and accuracy along the pipeline": SRAM, flash and accuracy of the network as it
stands after each stage (`ctx.extra["stage_figures"]`, kept by `tinyflow.metrics_vocabulary.record`), with the
device's SRAM and flash budgets as lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FIGURE_FILE = "pipeline_memory_accuracy.png"
TITLE = "memory and accuracy along the pipeline"


def pipeline_figure(
    stage_figures: Mapping[str, Mapping[str, Any]],
    sram_budget: int | None = None,
    flash_budget: int | None = None,
    title: str = TITLE,
) -> Any:
    """Three panels over the stages in run order: SRAM (KiB), flash (KiB), accuracy (%); a missing figure is no
    point, a stage without accuracy says why in its place."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(stage_figures)
    x = list(range(len(stages)))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharex=True)
    panels = (
        ("sram", "SRAM (KiB)", sram_budget, "#4c72b0"),
        ("flash", "flash (KiB)", flash_budget, "#55a868"),
        ("accuracy", "accuracy (%)", None, "#dd8452"),
    )
    for ax, (key, label, budget, colour) in zip(axes, panels, strict=True):
        scale = 100.0 if key == "accuracy" else 1 / 1024
        points = [(i, stage_figures[s].get(key)) for i, s in enumerate(stages)]
        shown = [(i, v * scale) for i, v in points if v is not None]
        if shown:
            ax.plot([i for i, _ in shown], [v for _, v in shown], marker="o", color=colour)
            for i, v in shown:
                note = stage_figures[stages[i]].get("what", "")
                kind = stage_figures[stages[i]].get("accuracy_kind") if key == "accuracy" else None
                text = f"{v:.1f}" + (f" ({kind})" if kind else "") + ("" if note == "network" else f"\n{note}")
                ax.annotate(text, (i, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        if budget is not None:
            ax.axhline(
                budget * scale, color="red", linestyle="--", linewidth=1.2, label=f"budget {budget / 1024:g} KiB"
            )
            ax.legend(loc="lower right", fontsize=8)
        if key == "accuracy":
            for i, s in enumerate(stages):
                if stage_figures[s].get(key) is None and stage_figures[s].get("no_accuracy"):
                    ax.annotate(
                        "no accuracy", (i, 0), textcoords="offset points", xytext=(0, 4), fontsize=7, ha="center"
                    )
        ax.set_title(label)
        ax.set_xticks(x, stages, rotation=30)
        ax.grid(alpha=0.3)
        ax.margins(y=0.2)
        ax.set_ylim(bottom=0)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
