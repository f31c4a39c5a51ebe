"""Stages for the Ray sweep tests (`stages=[ray_stages:crash_on_small_sram]`)."""

from __future__ import annotations

import os

from tinyflow.context import RunContext


def crash_on_small_sram(cfg, ctx: RunContext) -> RunContext:
    """The process dies without a Python exception (as an out-of-memory kill would) on the smallest device."""
    if float(cfg.device.sram_kb) < 100:
        os._exit(3)
    return ctx
