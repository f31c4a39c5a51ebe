"""Small stand-ins for the memory engine and the supernet, used only by the search tests.

`toy_costs` is a crude activation/weight count (not the memory engine's conventions) and `toy_accuracy` a
deterministic function of the arch: enough to test that strategies respect constraints and optimise.
"""

from __future__ import annotations

import math

from tinyflow.arch.genome import Arch
from tinyflow.search.problem import Costs


def toy_costs(arch: Arch, schedule: dict[str, int] | None = None) -> Costs:
    hw = arch.resolution // arch.stem_stride
    peak = arch.in_channels * arch.resolution**2 + arch.stem_channels * hw * hw
    macs = arch.stem_channels * arch.in_channels * 9 * hw * hw
    flash = 0
    for b in arch.blocks:
        out_hw = hw // b.stride
        peak = max(peak, (b.in_channels + b.hidden) * hw * hw)
        macs += (
            b.in_channels * b.hidden * hw * hw
            + b.hidden * b.kernel**2 * out_hw**2
            + b.hidden * b.out_channels * out_hw**2
        )
        flash += b.in_channels * b.hidden + b.hidden * b.kernel**2 + b.hidden * b.out_channels
        hw = out_hw
    if schedule and schedule.get("n_patches", 1) > 1:  # patching divides the early peak, at a MAC price
        n = schedule["n_patches"]
        peak = peak // (n * n) + schedule["patch_blocks"] * 1000
        macs = int(macs * (1 + 0.05 * n))
    return Costs(peak_sram=peak, flash=flash, macs=macs)


def toy_accuracy(arch: Arch) -> float:
    """Grows with MACs and kernel sizes; deterministic; in (0, 1)."""
    macs = toy_costs(arch).macs
    ks = sum(b.kernel for b in arch.blocks) / len(arch.blocks)
    return 1.0 - 1.0 / (1.0 + math.log1p(macs / 1e5) + 0.3 * ks)
