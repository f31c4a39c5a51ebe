"""SRAM and flash of a network as it stands after a stage, for the stage's logging (`tinyflow.metrics_vocabulary`).

The configured scheduler (with the options a joint search chose) plans the network's IR under the configured
memory conventions, bound to the device's SRAM budget as the `schedule` stage binds it; flash is the parameters'
count (`tinyflow.cost.flash.model_flash_bytes`). It measures for the record only: no stage's result depends on it.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from tinyflow.metrics_vocabulary import figures

log = logging.getLogger(__name__)


def graph_memory(cfg: DictConfig, graph: Any, options: dict[str, int] | None = None, prefix: str = "") -> dict:
    """`sram.peak_bytes`, `sram.arena_bytes` and `flash.bytes` (under `prefix`) of `graph` planned by the
    configured scheduler; {} (with a warning) when it cannot be planned."""
    from tinyflow.contracts import ScheduleBudget
    from tinyflow.cost.flash import model_flash_bytes
    from tinyflow.plugins import build_device, build_memory, build_plugin

    try:
        device = build_device(cfg)
        scheduler = build_plugin(cfg, "scheduler", **(options or {}))
        scheduler = scheduler.for_budget(ScheduleBudget(device.sram_budget_bytes, metric="arena"))
        plan = scheduler.plan(graph, build_memory(cfg))
        flash = model_flash_bytes(graph)
    except Exception as exc:  # logging must never fail a stage
        log.warning("memory for the record: could not plan the network (%s: %s)", type(exc).__name__, exc)
        return {}
    return figures(prefix, sram_peak=plan.peak_live_bytes, sram_arena=plan.arena_bytes, flash=flash)


def network_memory(cfg: DictConfig, net: Any, options: dict[str, int] | None = None, prefix: str = "") -> dict:
    """`graph_memory` of the network the configured scheduler deploys for `net` (a `DeployedNetwork`)."""
    from tinyflow.plugins import build_plugin

    try:
        deployed = build_plugin(cfg, "scheduler", **(options or {})).network(net)
        graph = deployed.graph()
    except Exception as exc:
        log.warning("memory for the record: no IR of the network (%s: %s)", type(exc).__name__, exc)
        return {}
    return graph_memory(cfg, graph, options, prefix)
