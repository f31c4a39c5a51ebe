"""The `space` stage's per-cell table: for every (width, resolution) cell the share of sampled subnets that fit the
device and their mean MACs, the chosen cell marked — what shows whether the budget binds."""

from __future__ import annotations

from typing import Any


def cells_table(result: Any, min_fit_share: float = 0.0) -> str:
    """Plain text, one row per width and one column per resolution: `fit% / mean MACs M`, `*` on the chosen cell,
    `-` where no sampled subnet fits, `(low)` where fewer than `min_fit_share` of the samples fit."""
    widths = sorted({c.width_mult for c in result.cells})
    resolutions = sorted({c.resolution for c in result.cells})
    at = {(c.width_mult, c.resolution): c for c in result.cells}
    best = (result.best.width_mult, result.best.resolution)
    header = ["w \\ r"] + [str(r) for r in resolutions]
    rows = [header]
    for w in widths:
        row = [f"{w:g}"]
        for r in resolutions:
            c = at.get((w, r))
            row.append(_cell(c, (w, r) == best, min_fit_share) if c is not None else "")
        rows.append(row)
    size = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(v.rjust(n) for v, n in zip(row, size)) for row in rows]
    top = (max(widths), max(resolutions))
    corner = "the grid's top corner" if best == top else f"not the top corner w={top[0]:g} r={top[1]}"
    lines.insert(
        0,
        f"fitting share / mean MACs of the fitting subnets per cell (SRAM budget {result.sram_budget / 1024:.0f} KiB, "
        f"flash budget {result.flash_budget / 1024:.0f} KiB); * chosen: w={best[0]:g} r={best[1]}, {corner}",
    )
    return "\n".join(lines)


def _cell(c: Any, chosen: bool, min_fit_share: float) -> str:
    if c.n_fit == 0:
        text = "- none fits"
    else:
        text = f"{100 * c.fit_share:.0f}% / {c.mean_macs / 1e6:.2f}M"
        if c.fit_share < min_fit_share:
            text += " (low)"
    return ("* " if chosen else "") + text
