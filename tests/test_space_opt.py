"""TinyNAS stage 1 on a toy cost: fitting share, MACs CDF, the chosen cell, and the nothing-fits error."""

from __future__ import annotations

import numpy as np
import pytest

from search_toys import toy_costs
from tinyflow.arch.space import MBConvSpace
from tinyflow.errors import BudgetError, ConfigError
from tinyflow.search.space_opt import optimize_space

SPACE = MBConvSpace(num_classes=10)
WIDTHS = [0.25, 0.5, 0.75]
RES = [32, 48, 64]


def _run(sram, flash, **kw):
    return optimize_space(SPACE, WIDTHS, RES, toy_costs, sram, flash, samples_per_cell=40, seed=0, progress=False, **kw)


def test_choice_maximises_mean_macs_of_fitting_subnets():
    ref = _run(10**12, 10**12)
    # unconstrained: everything fits, and the largest cell wins
    assert all(c.fit_share == 1.0 for c in ref.cells)
    assert (ref.best.width_mult, ref.best.resolution) == (0.75, 64)
    sram = int(np.median([c.min_peak_sram for c in ref.cells]))
    res = _run(sram, 10**12)
    for c in res.cells:
        assert 0.0 <= c.fit_share <= 1.0
        assert list(c.macs_fit) == sorted(c.macs_fit)
    fitting = [c for c in res.cells if c.n_fit]
    assert res.best.mean_macs == max(c.mean_macs for c in fitting)
    assert any(c.n_fit == 0 for c in res.cells) and fitting
    stats = res.stats()
    assert stats["chosen"] == {"width_mult": res.best.width_mult, "resolution": res.best.resolution}
    assert len(stats["cells"]) == 9 and res.n_evaluations == 9 * 40
    for cell in stats["cells"]:
        q = cell["macs_quantiles"]
        assert q == sorted(q) and (len(q) == 21 or cell["n_fit"] == 0)


def test_fit_share_matches_direct_count():
    import random

    sram = 60_000
    res = _run(sram, 10**12)
    rng = random.Random(0)
    genomes = [SPACE.sample_genome(rng) for _ in range(40)]
    for c in res.cells:
        sp = SPACE.with_width_resolution(c.width_mult, c.resolution)
        costs = [toy_costs(sp.build(g["depths"], g["kernels"], g["expands"])) for g in genomes]
        assert c.n_fit == sum(x.peak_sram <= sram for x in costs)
        assert c.min_peak_sram == min(x.peak_sram for x in costs)


def test_flash_budget_constrains_too():
    res = _run(10**12, 10**12)
    flash = int(np.median([c.min_flash for c in res.cells]))
    limited = _run(10**12, flash)
    assert sum(c.n_fit for c in limited.cells) < sum(c.n_fit for c in res.cells)
    assert limited.best.width_mult <= res.best.width_mult


def test_nothing_fits_names_smallest_costs_and_closest_cell():
    ref = _run(10**12, 10**12)
    min_peak = min(c.min_peak_sram for c in ref.cells)
    min_flash = min(c.min_flash for c in ref.cells)
    with pytest.raises(BudgetError) as err:
        _run(1000, 10**12)
    msg = str(err.value)
    assert f"Smallest peak SRAM seen: {min_peak} B" in msg
    assert f"smallest flash seen: {min_flash} B" in msg
    assert "closest cell: w=0.25, r=32" in msg


def test_bad_grid_is_config_error():
    with pytest.raises(ConfigError, match=r"space.widths"):
        optimize_space(SPACE, [], RES, toy_costs, 1, 1, progress=False)
    with pytest.raises(ConfigError, match=r"space.samples_per_cell"):
        optimize_space(SPACE, WIDTHS, RES, toy_costs, 1, 1, samples_per_cell=0, progress=False)
