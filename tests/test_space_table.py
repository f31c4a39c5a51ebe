"""The `space` stage's per-cell table names the chosen cell and every cell's fitting share."""

from __future__ import annotations

import numpy as np

from tinyflow.search.space_opt import CellStats, SpaceResult
from tinyflow.search.space_table import cells_table


def cell(w: float, r: int, n_fit: int, macs: float) -> CellStats:
    return CellStats(w, r, 10, n_fit, np.full(n_fit, macs), 1000, 1000, 0.5 if n_fit else 1.5)


def test_the_table_marks_the_chosen_cell_and_cells_that_do_not_fit() -> None:
    cells = [cell(0.25, 32, 10, 1e6), cell(0.25, 64, 3, 3e6), cell(0.5, 32, 10, 2e6), cell(0.5, 64, 0, 0)]
    result = SpaceResult(cells, cells[2], 32 * 1024, 256 * 1024, 0.1, 40)
    text = cells_table(result, min_fit_share=0.5)
    lines = text.splitlines()
    assert "* chosen: w=0.5 r=32, not the top corner w=0.5 r=64" in lines[0] and "SRAM budget 32 KiB" in lines[0]
    assert lines[1].split() == ["w", "\\", "r", "32", "64"]
    assert lines[2].split() == ["0.25", "100%", "/", "1.00M", "30%", "/", "3.00M", "(low)"]
    assert lines[3].split() == ["0.5", "*", "100%", "/", "2.00M", "-", "none", "fits"]
    top = SpaceResult(cells, cells[1], 32 * 1024, 256 * 1024, 0.1, 40)
    assert "the grid's top corner" not in cells_table(top)
    cells[3] = cell(0.5, 64, 10, 5e6)
    assert "the grid's top corner" in cells_table(SpaceResult(cells, cells[3], 1, 1, 0.1, 40))
