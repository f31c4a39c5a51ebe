"""Stage `space` (TinyNAS stage 1): choose the width multiplier and resolution whose fitting subnets have the
most MACs on this device; see `tinyflow.search.space_opt`. With `space.resolution_range: true` it chooses the width
and a resolution range instead (the resolutions whose cells fit at that width), and the supernet trains with
elastic resolution over it, so the search picks the resolution with the arch (MCUNetV2)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from tinyflow.context import RunContext, atomic_write_text
from tinyflow.contracts import ScheduleBudget
from tinyflow.errors import ConfigError
from tinyflow.metrics_vocabulary import figures, record
from tinyflow.plugins import build_device, build_memory, build_plugin
from tinyflow.search.costing import SchedulerCosts, fixed_overhead
from tinyflow.search.space_opt import optimize_space
from tinyflow.search.space_table import cells_table
from tinyflow.stages import stage
from tinyflow.tracking import active_tracker

log = logging.getLogger(__name__)


@dataclass
class SpaceSettings:
    """The `space:` block of the config."""

    widths: list[float]
    resolutions: list[int]
    samples_per_cell: int = 1000
    seed: int = 0
    min_fit_share: float = 0.0
    resolution_range: bool = False
    progress: bool = True

    @classmethod
    def from_cfg(cls, node: Any) -> SpaceSettings:
        if node is None:
            raise ConfigError("space: the config has no `space:` block (widths, resolutions, samples_per_cell, seed).")
        d = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"space: unknown key(s) {unknown}; known keys are {sorted(known)}.")
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"space: {exc}. Give space.widths and space.resolutions as lists.") from None


def plan_sram_budget(device: Any) -> int:
    """The SRAM the space stage lets a sampled subnet's plan take: the device's budget less the part of the
    firmware's overhead that no network avoids (runtime, stack; `costing.fixed_overhead`) — a cheap bound for
    thousands of samples; the search then checks each candidate's whole overhead."""
    return device.sram_budget_bytes - fixed_overhead(device.core)


def scheduler_costs(cfg: DictConfig, device: Any = None) -> SchedulerCosts:
    """Costs under the configured scheduler and memory conventions (its closed form when it offers one), the
    scheduler choosing each subnet's plan for `device`'s SRAM budget less the firmware's fixed overhead
    (`Scheduler.for_budget`)."""
    memory = build_memory(cfg)
    scheduler = build_plugin(cfg, "scheduler")

    def make(options: dict[str, int]) -> Any:
        return build_plugin(cfg, "scheduler", **options) if options else scheduler

    budget = None if device is None else ScheduleBudget(plan_sram_budget(device), metric="peak_live")
    return SchedulerCosts(memory, make, budget=budget)


def training_space(cfg: DictConfig, space: Any) -> Any:
    """The space the configured trainer trains for `space` (`Trainer.training_space`: a supernet with an RNNPool stem
    pins the stages before its cut), so the cells are scored on the archs the supernet will hold."""
    if cfg.get("trainer") is None:
        return space
    return build_plugin(cfg, "trainer").training_space(space)


def resolution_range(result: Any, best: Any, min_fit_share: float) -> list[int]:
    """MCUNetV2 searches the resolution with the arch: at the chosen width, every resolution of the grid whose cell
    has at least `min_fit_share` of its sampled subnets fitting (and some), the chosen cell's included."""
    keep = {best.resolution}
    for c in result.cells:
        if c.width_mult == best.width_mult and c.fit_share > 0 and c.fit_share >= min_fit_share:
            keep.add(c.resolution)
    return sorted(keep)


def log_fitting_memory(ctx: RunContext, tracker: Any, result: Any, seen: list[Any], samples: int) -> None:
    """The chosen cell's fitting samples' SRAM and flash (median, max) and its predicted capacity (mean MACs of the
    fitting subnets) under the shared names; nothing is trained yet, which the tag `accuracy.none` says."""
    index = next(i for i, c in enumerate(result.cells) if c is result.best)
    cell = seen[index * samples : (index + 1) * samples]
    fit = [c for c in cell if c.peak_sram <= result.sram_budget and c.flash <= result.flash_budget]
    values: dict[str, float] = {"capacity.macs_mean": float(result.best.mean_macs)}
    if fit:
        peaks, flashes = np.array([c.peak_sram for c in fit]), np.array([c.flash for c in fit])
        for stat, fn in (("median", np.median), ("max", np.max)):
            values.update(figures("fitting", stat, sram_peak=fn(peaks), flash=fn(flashes)))
    why = "space: nothing is trained yet; the cells are chosen by the MACs of their fitting subnets"
    record(ctx, tracker, "space", values, prefix="fitting", suffix="median", no_accuracy=why)


@stage("space")
def run(cfg: DictConfig, ctx: RunContext) -> RunContext:
    settings = SpaceSettings.from_cfg(cfg.get("space"))
    device = build_device(cfg)
    space = build_plugin(cfg, "search_space")
    data = build_plugin(cfg, "data")  # the data's channels and classes change the input and classifier sizes
    data.setup()
    space = space.bind(data)
    space = training_space(cfg, space)
    costs = scheduler_costs(cfg, device)
    tracker = active_tracker()
    tracker.log_params(
        {
            "space.widths": settings.widths,
            "space.resolutions": settings.resolutions,
            "space.samples_per_cell": settings.samples_per_cell,
            "space.seed": settings.seed,
            "sram_budget_bytes": device.sram_budget_bytes,
            "plan_sram_budget_bytes": plan_sram_budget(device),
            "flash_budget_bytes": device.flash_budget_bytes,
        }
    )
    seen: list[Any] = []  # every evaluation's costs, in the scan's order (cell by cell), for the record

    def cost_fn(arch: Any) -> Any:
        seen.append(costs(arch))
        return seen[-1]

    result = optimize_space(
        space,
        settings.widths,
        settings.resolutions,
        cost_fn,
        plan_sram_budget(device),
        device.flash_budget_bytes,
        samples_per_cell=settings.samples_per_cell,
        seed=settings.seed,
        min_fit_share=settings.min_fit_share,
        progress=settings.progress,
    )
    best = result.best
    log.info(
        "space: chose w=%g r=%d (mean MACs of fitting subnets %.2f M, %.0f%% fit) after %d evaluations in %.1f s",
        best.width_mult,
        best.resolution,
        best.mean_macs / 1e6,
        100 * best.fit_share,
        result.n_evaluations,
        result.seconds,
    )
    log.info("space: %s", cells_table(result, settings.min_fit_share))
    for i, c in enumerate(result.cells):
        tracker.log_metrics({"cell_fit_share": c.fit_share, "cell_mean_macs": c.mean_macs}, step=i)
    tracker.log_metrics(
        {
            "chosen_width_mult": best.width_mult,
            "chosen_resolution": float(best.resolution),
            "chosen_mean_macs": best.mean_macs,
            "chosen_fit_share": best.fit_share,
            "evaluations": float(result.n_evaluations),
            "evaluations_per_s": result.n_evaluations / max(result.seconds, 1e-9),
        }
    )
    log_fitting_memory(ctx, tracker, result, seen, settings.samples_per_cell)
    stats = result.stats()
    out = Path(ctx.output_dir) / "space"
    full = {**stats, "macs_fit": {f"w{c.width_mult:g}_r{c.resolution}": c.macs_fit.tolist() for c in result.cells}}
    atomic_write_text(out / "space_cells.json", json.dumps(full))
    tracker.log_artifact(str(out / "space_cells.json"))

    from tinyflow.search.plots import space_cdf_figure

    fig = space_cdf_figure(result)
    fig_path = out / "space_macs_cdf.png"
    fig.savefig(fig_path, dpi=120)
    tracker.log_figure(fig, "space_macs_cdf.png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    ctx.width_mult = best.width_mult
    ctx.resolution = best.resolution
    ctx.resolutions = None
    if settings.resolution_range:
        ctx.resolutions = resolution_range(result, best, settings.min_fit_share)
        ctx.resolution = max(ctx.resolutions)
        log.info("space: resolution range %s at w=%g (the search picks within it)", ctx.resolutions, best.width_mult)
        tracker.log_params({"space.chosen_resolutions": ctx.resolutions})
    ctx.space_stats = stats
    ctx.artifacts["space_cdf"] = str(fig_path)
    ctx.artifacts["space_cells"] = str(out / "space_cells.json")
    return ctx
