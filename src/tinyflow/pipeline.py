"""Run the stages named in `stages:` in order, tracked, saving the context after each one."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import tinyflow
from tinyflow import console
from tinyflow.context import CONTEXT_FILE, RunContext
from tinyflow.errors import ConfigError
from tinyflow.plugins import build_device, build_plugin
from tinyflow.stages import get_stage
from tinyflow.tracking import activate

log = logging.getLogger(__name__)


def git_commit() -> str:
    """The checkout's commit (with `+dirty` when it has uncommitted changes), or `unknown`."""
    root = Path(tinyflow.__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _job_info() -> tuple[str, int, dict[str, str]]:
    """(output dir, job number, group choices) of the running Hydra job."""
    hc = HydraConfig.get()
    choices = {k: str(v) for k, v in hc.runtime.choices.items() if not k.startswith("hydra")}
    num = hc.job.num if hc.job.get("num") is not None else 0
    return hc.runtime.output_dir, int(num), choices


def find_resume_dir(resume: Any, output_dir: str) -> Path | None:
    """Where to load a previous context from: `true` → this job's dir, `last` → newest run, or a path."""
    if resume in (None, False, "false"):
        return None
    if resume in (True, "true"):
        candidate = Path(output_dir)
    elif resume == "last":
        runs = sorted(
            (p.parent for p in (tinyflow.OUTPUTS_DIR / "runs").glob(f"*/{CONTEXT_FILE}")),
            key=lambda p: (p / CONTEXT_FILE).stat().st_mtime,
        )
        runs = [p for p in runs if p.resolve() != Path(output_dir).resolve()]
        if not runs:
            raise ConfigError(
                "resume=last: no earlier run with a context.json under outputs/runs/. Run without resume."
            )
        candidate = runs[-1]
    else:
        candidate = Path(str(resume)).expanduser()
    if not (candidate / CONTEXT_FILE).exists():
        if resume in (True, "true"):
            return None  # nothing to resume yet: a fresh run in this directory
        raise ConfigError(
            f"resume={resume}: {candidate} holds no {CONTEXT_FILE}. Give the output dir of an earlier run, "
            "`resume=last`, or `resume=true` with the same `hydra.run.dir`."
        )
    return candidate


def run_pipeline(cfg: DictConfig) -> RunContext:
    """Run the configured stages; returns the final context. Errors propagate (runs marked FAILED)."""
    output_dir, job_num, choices = _job_info()
    tracker = build_plugin(cfg, "tracking")
    stages = list(cfg.get("stages") or [])
    tags = {
        "run_name": f"{choices.get('device', '?')}-{job_num}",
        "device": choices.get("device", "?"),
        "scheduler": choices.get("scheduler", "?"),
        "search_space": choices.get("search_space", "?"),
        "data": choices.get("data", "?"),
        "git_commit": git_commit(),
        "job_num": str(job_num),
        "output_dir": output_dir,
        "stages": ",".join(stages),
    }
    rows: list[dict[str, Any]] = []
    with activate(tracker), tracker.job(cfg, tags):
        # checks inside the job so a bad config still leaves a FAILED run that says why
        build_device(cfg)
        if not stages:
            raise ConfigError("stages: the list is empty. Name the stages to run, e.g. `stages=[space,train]`.")
        fns = {name: get_stage(name) for name in stages}  # unknown names fail before any stage runs
        ctx = RunContext(output_dir=output_dir)
        resume_dir = find_resume_dir(cfg.get("resume", False), output_dir)
        if resume_dir is not None:
            ctx = RunContext.load(resume_dir)
            ctx.output_dir = output_dir
            log.info("resuming from %s (finished stages: %s)", resume_dir, ctx.completed)
        for i, name in enumerate(stages, 1):
            if name in ctx.completed:
                console.stage_skipped(name)
                rows.append({"stage": name, "status": "skipped (resume)"})
                continue
            console.stage_started(name, i, len(stages))
            log.info("stage %s: start", name)
            start = time.perf_counter()
            try:
                with tracker.stage(name):
                    ctx = fns[name](cfg, ctx)
            except BaseException:
                rows.append({"stage": name, "status": "[red]FAILED", "seconds": time.perf_counter() - start})
                console.console.print(console.summary_table(rows))
                raise
            seconds = time.perf_counter() - start
            ctx.completed.append(name)
            ctx.save()
            log.info("stage %s: done in %.1f s", name, seconds)
            console.stage_finished(name, seconds)
            rows.append({"stage": name, "status": "[green]done", "seconds": seconds})
        ctx.save()
        console.console.print(console.summary_table(rows))
        if importlib.util.find_spec("tinyflow.report") is not None:
            from tinyflow.report import write_report

            write_report(cfg, ctx)
    return ctx
