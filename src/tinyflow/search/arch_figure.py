"""The searched network drawn as MCUNetV2 draws its VWW model, and the kernel sizes inside vs after the patch stage.

One box per block, `MB{expand}_{k}x{k}` (the stem `Conv_{k}x{k}`), coloured by kernel size, the blocks run patch
by patch shaded, and the feature-map resolution written where a stage starts. MCUNetV2 observes that its searched
models take small kernels in the patch stage (a larger kernel widens the overlap every patch recomputes) and large
ones after it; `patch_stage_kernels` reports the same split for a searched arch.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch, Rectangle

from tinyflow.arch.genome import Arch

KERNEL_COLOURS = {1: "#d9d9d9", 3: "#9ecae1", 5: "#fdae6b", 7: "#e6550d"}


def _out(size: int, k: int, s: int) -> int:
    return (size + 2 * (k // 2) - k) // s + 1


def block_rows(arch: Arch, patch_blocks: int = 0) -> list[dict[str, Any]]:
    """Per block (the stem first): label, kernel, expand, stage, input and output resolution, patched or not.

    `patch_blocks` counts the stem as block 0, as `scheduler.patch_blocks` does (0: no patch stage)."""
    rows = []
    r = arch.resolution
    out = _out(r, arch.stem_kernel, arch.stem_stride)
    k = arch.stem_kernel
    rows.append(
        dict(label=f"Conv_{k}x{k}", kernel=k, expand=0, stage=-1, res_in=r, res_out=out, patched=patch_blocks > 0)
    )
    r = out
    for i, b in enumerate(arch.blocks):
        out = _out(r, b.kernel, b.stride)
        label = f"MB{b.expand}_{b.kernel}x{b.kernel}"
        rows.append(
            dict(
                label=label,
                kernel=b.kernel,
                expand=b.expand,
                stage=b.stage,
                res_in=r,
                res_out=out,
                patched=i + 1 < patch_blocks,
            )
        )
        r = out
    return rows


def patch_stage_kernels(arch: Arch, patch_blocks: int) -> dict[str, Any]:
    """The MBConv kernel sizes inside the patch stage and after it, with their means (MCUNetV2's observation)."""
    rows = block_rows(arch, patch_blocks)[1:]  # the MBConv blocks
    inside = [r["kernel"] for r in rows if r["patched"]]
    after = [r["kernel"] for r in rows if not r["patched"]]
    return {
        "patch_blocks": patch_blocks,
        "patch_stage_kernels": inside,
        "rest_kernels": after,
        "patch_stage_mean_kernel": sum(inside) / len(inside) if inside else None,
        "rest_mean_kernel": sum(after) / len(after) if after else None,
    }


def arch_figure(arch: Arch, patch_blocks: int = 0, title: str = "") -> Any:
    """MCUNetV2's model figure for `arch`: boxes per block coloured by kernel, the patch stage shaded."""
    rows = block_rows(arch, patch_blocks)
    n = len(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.62 * n + 1.5), 2.9))
    w, gap = 0.5, 0.12
    stage_seen: set[int] = set()
    for i, row in enumerate(rows):
        x = i * (w + gap)
        ax.add_patch(
            FancyBboxPatch(
                (x, 0.0),
                w,
                1.6,
                boxstyle="round,pad=0.02",
                fc=KERNEL_COLOURS.get(row["kernel"], "#bbbbbb"),
                ec="k",
                lw=0.8,
            )
        )
        ax.text(x + w / 2, 0.8, row["label"], rotation=90, ha="center", va="center", fontsize=8)
        if row["stage"] not in stage_seen:  # the resolution where each stage starts
            stage_seen.add(row["stage"])
            ax.text(x + w / 2, -0.22, f"{row['res_in']}²", ha="center", va="top", fontsize=7)
    patched = [i for i, r in enumerate(rows) if r["patched"]]
    if patched:
        x0, x1 = patched[0] * (w + gap) - gap / 2, patched[-1] * (w + gap) + w + gap / 2
        ax.add_patch(Rectangle((x0, -0.1), x1 - x0, 1.95, fc="none", ec="crimson", lw=1.6, ls="--"))
        ax.text((x0 + x1) / 2, 1.95, "patch-based inference", color="crimson", ha="center", va="bottom", fontsize=8)
    handles = [Rectangle((0, 0), 1, 1, fc=c, ec="k") for k, c in KERNEL_COLOURS.items() if k > 1]
    ax.legend(
        handles, [f"{k}x{k}" for k in KERNEL_COLOURS if k > 1], loc="upper right", fontsize=7, ncol=3, frameon=False
    )
    ax.set_xlim(-0.2, n * (w + gap))
    ax.set_ylim(-0.6, 2.4)
    ax.axis("off")
    how = f"the first {patch_blocks} blocks in patches" if patched else "layer by layer"
    ax.set_title(title or f"searched network at {arch.resolution}² ({how})", fontsize=9)
    fig.tight_layout()
    return fig
