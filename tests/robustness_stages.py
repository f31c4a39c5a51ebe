"""Stages for the robustness tests (registered through tests/tinyflow_test_stages-0.0.0.dist-info, like a third
party's): one that waits to be signalled, one that writes a file the resume check can find changed."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from tinyflow.context import RunContext


def sleep(cfg, ctx: RunContext) -> RunContext:
    """Announce itself (so a test knows the stage runs), then wait for a signal."""
    Path(ctx.output_dir, "sleeping").write_text(str(os.getpid()))
    print("SLEEPING", flush=True)
    time.sleep(600)
    return ctx


def write_model(cfg, ctx: RunContext) -> RunContext:
    """A stand-in for a stage that produces a checkpoint: writes model.pt and records it in the context."""
    path = Path(ctx.output_dir, "model.pt")
    path.write_bytes(b"weights " + str(ctx.metrics.get("written", 0)).encode())
    ctx.model_checkpoint = str(path)
    ctx.metrics["written"] = ctx.metrics.get("written", 0) + 1
    return ctx


def plain(console_text: str) -> str:
    """A rich error panel as one line of words (box characters and line wraps removed)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", console_text).split())


def fill(cfg, ctx: RunContext) -> RunContext:
    """Write 8 MiB into the run folder (atomically, as stages do): on a small disk it fills it."""
    from tinyflow.atomic import atomic_write_text

    atomic_write_text(Path(ctx.output_dir, "big.bin"), "x" * (8 << 20))
    return ctx
