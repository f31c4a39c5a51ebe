"""Figures of the search: MACs CDF per (w, r) cell, Pareto front, best-so-far history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from tinyflow.search.space_opt import SpaceResult


def space_cdf_figure(result: SpaceResult, top: int = 8) -> Any:
    """MCUNet's figure: the CDF of MACs among the fitting subnets of each cell; the chosen cell in bold."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cells = [c for c in result.cells if c.n_fit]
    ranked = sorted(cells, key=lambda c: c.mean_macs, reverse=True)
    labelled = {id(c) for c in ranked[:top]}
    cmap = plt.get_cmap("viridis")
    hi = max((c.mean_macs for c in cells), default=1.0) or 1.0
    handles = {}
    for c in sorted(cells, key=lambda c: c.mean_macs):  # the largest drawn last, on top
        x = c.macs_fit / 1e6
        y = np.arange(1, len(x) + 1) / len(x)
        best = c is result.best
        (line,) = ax.step(
            x,
            y,
            where="post",
            color="crimson" if best else cmap(c.mean_macs / hi),
            lw=2.5 if best else 1.0,
            alpha=1.0 if best or id(c) in labelled else 0.35,
        )
        if id(c) in labelled:
            handles[id(c)] = (line, f"w{c.width_mult:g}-r{c.resolution} ({c.fit_share:.0%} fit)")
    ax.set_xlabel("MACs of fitting subnets (M)")
    ax.set_ylabel("cumulative probability")
    ax.set_title(
        f"Search-space CDF (SRAM {result.sram_budget / 1024:.0f} KiB, flash {result.flash_budget / 1024:.0f} KiB): "
        f"chosen w{result.best.width_mult:g}-r{result.best.resolution}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    if handles:  # legend from the largest mean MACs down
        entries = [handles[id(c)] for c in ranked if id(c) in handles]
        ax.legend([h for h, _ in entries], [t for _, t in entries], fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def pareto_figure(
    rows: Sequence[dict[str, Any]],
    front: Sequence[dict[str, Any]],
    sram_budget: int | None,
    best: dict[str, Any] | None = None,
    ylabel: str = "accuracy",
) -> Any:
    """Accuracy against peak SRAM: every evaluated candidate, the 3-objective Pareto set (accuracy, SRAM, MACs),
    its 2-D front (accuracy vs SRAM) as a step line, the chosen arch and the device's SRAM budget."""
    from tinyflow.search.problem import pareto_front

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if rows:
        ax.scatter(
            [r["peak_sram"] / 1024 for r in rows],
            [r["accuracy"] for r in rows],
            s=6,
            alpha=0.3,
            color="grey",
            label="evaluated",
        )
    if front:
        ax.scatter(
            [r["peak_sram"] / 1024 for r in front],
            [r["accuracy"] for r in front],
            s=14,
            color="tab:blue",
            label="Pareto set (accuracy, SRAM, MACs)",
        )
    front2 = sorted(pareto_front(list(rows), (("accuracy", 1), ("peak_sram", -1))), key=lambda r: r["peak_sram"])
    if front2:
        ax.step(
            [r["peak_sram"] / 1024 for r in front2],
            [r["accuracy"] for r in front2],
            where="post",
            color="tab:blue",
            label="front: accuracy vs SRAM",
        )
    if best is not None:
        ax.scatter(
            [best["peak_sram"] / 1024], [best["accuracy"]], marker="*", s=160, color="crimson", zorder=5, label="chosen"
        )
    if sram_budget is not None:
        ax.axvline(sram_budget / 1024, color="crimson", ls="--", label="device SRAM budget")
    ax.set_xlabel("peak SRAM (KiB)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def history_figure(histories: dict[str, Sequence[dict[str, Any]]]) -> Any:
    """Best accuracy so far against accuracy evaluations spent, one line per strategy/run."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, hist in histories.items():
        ax.plot([h["n_evaluations"] for h in hist], [h["best_so_far"] for h in hist], label=name)
    ax.set_xlabel("accuracy evaluations")
    ax.set_ylabel("best accuracy so far")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
