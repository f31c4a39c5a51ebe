"""Run the stages named in `stages:` in order, tracked, saving the context after each one."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import tinyflow
from tinyflow import console
from tinyflow.atomic import atomic_write_text
from tinyflow.config_schema import validate_config
from tinyflow.context import CONTEXT_FILE, RunContext
from tinyflow.errors import ConfigError
from tinyflow.plugins import build_device, build_plugin
from tinyflow.stages import get_stage
from tinyflow.threads import JobThreads
from tinyflow.tracking import activate, flatten
from tinyflow.training.cache import file_digest
from tinyflow.validation import refuse_non_finite

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


#: the resolved config of a run, written when it starts, so a resume can tell whether it continues the same job
RUN_CONFIG_FILE = "run_config.json"
#: top-level keys that change how a job runs or is shown, never its results (a resume may change them)
NEUTRAL_KEYS = ("resume", "tracking", "cache", "stages", "sweep", "threads")
#: RunContext fields that name files a stage produced (their digests are checked when a run resumes)
FILE_FIELDS = ("supernet_checkpoint", "model_checkpoint", "onnx_path", "onnx_int8_path")
#: files a stage records in `ctx.artifacts` that later stages read back (the schedule stage's Deployment)
ARTIFACT_FILES = ("deployment",)


def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config's leaves that can change a result: everything but `NEUTRAL_KEYS` and `*.progress`."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    flat = flatten({k: v for k, v in container.items() if k not in NEUTRAL_KEYS})
    kept = {k: v for k, v in flat.items() if k.split(".")[-1] != "progress"}
    return dict(json.loads(json.dumps(kept, default=str)))  # as run_config.json holds it (enums as text)


def config_diff(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key: before → now` for every leaf that differs (`(unset)` where one side lacks it)."""
    lines = []
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key, "(unset)"), now.get(key, "(unset)")
        if json.dumps(a, default=str) != json.dumps(b, default=str):
            lines.append(f"{key}: {a!r} → {b!r}")
    return lines


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((run_dir / RUN_CONFIG_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _refuse_diff(run_dir: Path, diff: list[str]) -> ConfigError:
    shown = "; ".join(diff[:12]) + (f"; … {len(diff) - 12} more" if len(diff) > 12 else "")
    return ConfigError(
        f"resume: {run_dir} ran with another config, which changes results ({shown}). A resume continues the same "
        "job: run it with that run's values, or start a new run (resume=false)."
    )


def find_resume_dir(resume: Any, output_dir: str, config: dict[str, Any] | None = None) -> Path | None:
    """Where to load a previous context from: `true` → this job's dir, `last` → the newest run of this config (among
    the folders next to this job's), or a path. With `config` (`result_config`), a run whose saved config differs is
    refused with the keys that differ."""
    if resume in (None, False, "false"):
        return None
    here = Path(output_dir).resolve()
    if resume in (True, "true"):
        candidate = Path(output_dir)
    elif resume == "last":
        runs = sorted(
            (p.parent for p in here.parent.glob(f"*/{CONTEXT_FILE}") if p.parent.resolve() != here),
            key=lambda p: (p / CONTEXT_FILE).stat().st_mtime,
        )
        if not runs:
            raise ConfigError(
                f"resume=last: no earlier run with a {CONTEXT_FILE} in {here.parent}. Run without resume."
            )
        if config is not None:
            same = [p for p in runs if _saved_config(p) == config]
            if not same:
                newest = runs[-1]
                saved = _saved_config(newest)
                diff = config_diff(saved, config) if saved is not None else [f"{RUN_CONFIG_FILE}: missing"]
                raise ConfigError(
                    f"resume=last: no earlier run in {here.parent} has this config. The newest, {newest}, differs in: "
                    + "; ".join(diff[:12])
                    + ". Resume it with its values (`resume=<its folder>` and those overrides), or run without resume."
                )
            runs = same
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
    if config is not None:
        saved = _saved_config(candidate)
        if saved is None:
            log.warning(
                "resume: %s records no %s (an older run); its config cannot be compared", candidate, RUN_CONFIG_FILE
            )
        elif saved != config:
            raise _refuse_diff(candidate, config_diff(saved, config))
    return candidate


def produced_paths(ctx: RunContext) -> dict[str, str | None]:
    """The files a stage may produce that later stages read: `FILE_FIELDS` and `ARTIFACT_FILES` entries."""
    return {**{f: getattr(ctx, f) for f in FILE_FIELDS}, **{a: ctx.artifacts.get(a) for a in ARTIFACT_FILES}}


def record_files(ctx: RunContext, name: str, before: dict[str, str | None]) -> None:
    """Remember the SHA-256 of each file `name` produced (a `produced_paths` entry it set or changed), so a
    resume that finds one missing or changed runs that stage again."""
    produced = {}
    for f, path in produced_paths(ctx).items():
        if path and path != before.get(f) and Path(path).is_file():
            produced[path] = file_digest(path)
    ctx.extra.setdefault("stage_files", {})[name] = produced


def check_resumed_files(ctx: RunContext) -> None:
    """Un-finish the first completed stage whose recorded files are missing or changed, and every stage after it, so
    they run again (a corrupt checkpoint is never served to the next stage on every resume)."""
    recorded = ctx.extra.get("stage_files", {})
    for i, name in enumerate(ctx.completed):
        for path, digest in recorded.get(name, {}).items():
            if not Path(path).is_file() or file_digest(path) != digest:
                again = ctx.completed[i:]
                log.warning(
                    "resume: %s (written by stage %s) is missing or changed since it was written; running %s again",
                    path,
                    name,
                    ", ".join(again),
                )
                ctx.completed = ctx.completed[:i]
                return


def write_run_config(output_dir: str, config: dict[str, Any]) -> None:
    atomic_write_text(Path(output_dir) / RUN_CONFIG_FILE, json.dumps(config, indent=1, sort_keys=True, default=str))


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
    # registered as a running job from the start (tinyflow.threads): others sharing the machine count it
    with JobThreads.for_job(cfg) as threads, activate(tracker), tracker.job(cfg, tags):
        # checks inside the job so a bad config still leaves a FAILED run that says why; all before any stage runs
        validate_config(cfg)
        refuse_non_finite(cfg)  # NaN passes every range check (`nan <= 0` is false); infinity every lower bound
        threads.start(tracker)  # this job's share of the cores: printed, logged, re-evaluated as jobs come and go
        build_device(cfg)
        if not stages:
            raise ConfigError("stages: the list is empty. Name the stages to run, e.g. `stages=[space,train]`.")
        fns = {name: get_stage(name) for name in stages}  # unknown names fail before any stage runs
        config = result_config(cfg)
        ctx = RunContext(output_dir=output_dir)
        resume_dir = find_resume_dir(cfg.get("resume", False), output_dir, config)
        if resume_dir is not None:
            ctx = RunContext.load(resume_dir)
            ctx.output_dir = output_dir
            ctx.extra["resumed_from"] = str(resume_dir)
            check_resumed_files(ctx)
            tracker.set_tags({"resumed_from": str(resume_dir)})
            log.info("resuming from %s (finished stages: %s)", resume_dir, ctx.completed)
        write_run_config(output_dir, config)
        ctx.save()  # from the start: a job killed in its first stage can be resumed (resume=last finds it)
        for i, name in enumerate(stages, 1):
            if name in ctx.completed:
                console.stage_skipped(name)
                rows.append({"stage": name, "status": "skipped (resume)"})
                continue
            threads.check()
            console.stage_started(name, i, len(stages))
            log.info("stage %s: start", name)
            start = time.perf_counter()
            before = produced_paths(ctx)
            try:
                with tracker.stage(name):
                    ctx = fns[name](cfg, ctx)
            except BaseException:
                rows.append({"stage": name, "status": "[red]FAILED", "seconds": time.perf_counter() - start})
                console.console.print(console.summary_table(rows))
                raise
            seconds = time.perf_counter() - start
            record_files(ctx, name, before)
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
