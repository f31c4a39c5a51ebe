"""The per-layer profile of a firmware run (`firmware.profile=true`): instructions per layer and per op kind.

Method: the generated `tf_model_run` reads the harness's clock (the CMSDK timer's down-counter; with qemu's
`-icount shift=0` one tick is 40 instructions) once before the input copy and once after each layer call and each
copy; call i's instructions are its ticks × 40. The intervals telescope, so their sum is the clock between the
first and the last read: the whole-inference count less the function's entry/exit and the clock calls outside the
intervals — `PROFILE_OVERHEAD` instructions at most, plus one tick at each end. A layer's figure is the mean over
the test images (each read is quantized to 40 instructions; the phase varies from image to image). Each point
costs the profiled build about `POINT_COST` instructions (a call to the clock, a subtraction, a store), and the
compiler lays the code around the reads out differently (measured: the profiled ResNet-8 runs 1,960 instructions
more than the plain build, 0.007 %); a build without `profile` has none of it. The harness checks the clock
against a loop of exactly 2 × 20,000 instructions after every image (`calibration`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tinyflow.firmware.codegen import COPY_IN, COPY_OUT, CSources
from tinyflow.firmware.emulator import RunResult
from tinyflow.firmware.qmodel import QModel

TICK = 40  # instructions per tick of the 25 MHz timer under -icount shift=0
CALIBRATION = 2 * 20000  # the harness's calibration loop: 20,000 passes of subs + bne
PROFILE_OVERHEAD = 2 * TICK + 32  # |whole − Σ points|: one tick at each end + entry/exit and two clock calls
POINT_COST = 10  # instructions each profile point adds to the profiled build (bl clock, ldr, sub, str, mov)
POINT_BYTES = 4  # each point's counter in .bss (uint32_t tf_profile[points])
PROFILE_STACK_BYTES = 32  # the clock call's frame and the saved registers around it (measured +16 to +20 B)


def profiled_overhead(predicted: Any, points: int) -> Any:
    """The overhead prediction of a profiled build: its counters (runtime data) and the clock call's frame (stack)
    on top of the plain build's — a profiled build is measured against what it really carries."""
    return replace(
        predicted,
        runtime=predicted.runtime + POINT_BYTES * points,
        stack=predicted.stack + PROFILE_STACK_BYTES,
        source=f"{predicted.source}; + the profile's {points} counters and its clock call's frame",
    )


def layer_rows(model: QModel, points: list[str], per_point: np.ndarray) -> list[dict[str, Any]]:
    """One row per layer (its calls summed: a patch stage calls a layer once per patch), in call order."""
    kinds = {la.name: la.kind for la in model.layers}
    total: dict[str, float] = defaultdict(float)
    for name, value in zip(points, per_point):
        total[name] += float(value)
    rows = []
    for name, insns in total.items():
        node = model.graph.nodes.get(name)
        macs = int(model.graph.node_macs(node)) if node is not None and name not in (COPY_IN, COPY_OUT) else 0
        kind = kinds.get(name, "copy")
        rows.append(
            {
                "layer": name,
                "kind": kind,
                "macs": macs,
                "instructions": round(insns),
                "instructions_per_mac": round(insns / macs, 3) if macs else None,
            }
        )
    return rows


def kind_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The layer rows summed per op kind, most instructions first."""
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        a = acc[r["kind"]]
        a[0] += r["instructions"]
        a[1] += r["macs"]
        a[2] += 1
    out = [
        {"kind": k, "layers": n, "instructions": i, "macs": m, "instructions_per_mac": round(i / m, 3) if m else None}
        for k, (i, m, n) in acc.items()
    ]
    return sorted(out, key=lambda r: -r["instructions"])


def profile_check(run: RunResult, per_point: np.ndarray) -> dict[str, Any]:
    """The counting method's validation: Σ points against the whole inference, the calibration loop."""
    whole = float(np.mean(run.instructions))
    cal = run.extra[:, -1]
    summed = float(per_point.sum())
    return {
        "whole_instructions": round(whole),
        "sum_of_points": round(summed),
        "difference": round(whole - summed),
        "stated_overhead": PROFILE_OVERHEAD,
        "within_overhead": bool(abs(whole - summed) <= PROFILE_OVERHEAD),
        "calibration_expected": CALIBRATION,
        "calibration_measured": [int(cal.min()), int(cal.max())],
        "calibration_exact": bool(np.all(np.abs(cal - CALIBRATION) <= TICK)),
        "point_cost": POINT_COST,
        "points": int(per_point.size),
        "tick": TICK,
    }


def profile_figure(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """MicroNets' view: instructions against MACs per layer (log-log), one colour per op kind."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for kind in sorted({r["kind"] for r in rows if r["macs"]}):
        pts = [(r["macs"], r["instructions"]) for r in rows if r["kind"] == kind and r["macs"]]
        ax.scatter(*zip(*pts), label=kind, s=18)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("MACs per layer")
    ax.set_ylabel("instructions per layer")
    ax.set_title(title or "per-layer profile")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def profile_section(model: QModel, sources: CSources, run: RunResult, folder: Path) -> dict[str, Any]:
    """The `profile` keys of the firmware result: layer rows, per-kind rows, the method's check, the figure."""
    if run.extra is None or run.extra.shape[1] != len(sources.profile_points) + 1:
        return {"profile": [], "profile_check": {"error": "the run carries no profile (a build without profile)"}}
    per_point = run.extra[:, :-1].mean(axis=0)
    rows = layer_rows(model, sources.profile_points, per_point)
    fig = profile_figure(rows, Path(folder) / "profile.png", model.graph.name)
    return {
        "profile": rows,
        "profile_by_kind": kind_rows(rows),
        "profile_check": profile_check(run, per_point),
        "profile_figure": str(fig) if fig else None,
    }


def markdown_table(kinds: list[dict[str, Any]]) -> str:
    """The per-kind profile as a Markdown table (instructions, MACs, per MAC)."""
    lines = ["| op kind | layers | instructions | MACs | instructions / MAC |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in kinds:
        per = f"{r['instructions_per_mac']:.2f}" if r["instructions_per_mac"] is not None else "—"
        lines.append(f"| {r['kind']} | {r['layers']} | {r['instructions']:,} | {r['macs']:,} | {per} |")
    return "\n".join(lines)
