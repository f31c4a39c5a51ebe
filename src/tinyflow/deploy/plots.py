"""Figures of the deployed model (matplotlib, Agg backend)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def memory_profile_figure(per_layer: list[dict[str, Any]], sram_budget_bytes: int | None, title: str) -> Any:
    """Working set per op of the deployed plan, in KiB, against the device's SRAM budget."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(per_layer)), 3.5))
    kib = [row["working_set_bytes"] / 1024 for row in per_layer]
    ax.bar(range(len(kib)), kib, color="#4c72b0", width=0.8)
    if sram_budget_bytes:
        ax.axhline(sram_budget_bytes / 1024, color="#c44e52", linestyle="--", label="device SRAM budget")
        ax.legend(loc="upper right")
    ax.set_xlabel("op (execution order)")
    ax.set_ylabel("working set (KiB)")
    ax.set_title(title)
    fig.tight_layout()
    return fig
