"""Stages used by the foundation tests (loaded as `stages=[stages_for_tests:ok]`, like a user's own stage)."""

from __future__ import annotations

from tinyflow.context import RunContext
from tinyflow.errors import DataError
from tinyflow.plugins import build_plugin
from tinyflow.tracking import active_tracker


def ok(cfg, ctx: RunContext) -> RunContext:
    active_tracker().log_metrics({"answer": 42.0})
    ctx.metrics["ok_runs"] = ctx.metrics.get("ok_runs", 0) + 1
    return ctx


def also_ok(cfg, ctx: RunContext) -> RunContext:
    ctx.metrics["also_ok"] = 1.0
    return ctx


def boom(cfg, ctx: RunContext) -> RunContext:
    raise RuntimeError("boom: an unexpected failure inside a stage")


def missing_data(cfg, ctx: RunContext) -> RunContext:
    raise DataError("data.root: /nowhere holds no dataset. Put the files there or set data.root=<folder>.")


def show_scheduler(cfg, ctx: RunContext) -> RunContext:
    scheduler = build_plugin(cfg, "scheduler")
    print(f"SCHEDULER={type(scheduler).__module__}.{type(scheduler).__qualname__} name={scheduler.name}")
    return ctx
