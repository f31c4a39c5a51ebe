"""The Ray launcher: one Ray task per Hydra job; every job's outcome comes back (see the package docstring).

Ray is imported when a sweep launches, not when Hydra scans its plugins (every `python -m tinyflow` does that).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

#: a job file larger than this is not brought back (checkpoints, ONNX files stay where the job ran)
_MAX_FETCHED_FILE = 1 << 20


def _job_files(output_dir: str) -> dict[str, bytes]:
    """The small files a sweep summary reads: the job's top-level files and its `.hydra/` folder."""
    root = Path(output_dir)
    out: dict[str, bytes] = {}
    for path in [*root.glob("*"), *root.glob(".hydra/*")]:
        if path.is_file() and path.stat().st_size <= _MAX_FETCHED_FILE:
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def _run_job_remote(
    hydra_context: HydraContext,
    sweep_config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
    fetch_files: bool,
) -> tuple[JobReturn, dict[str, bytes]]:
    """Runs in a Ray worker: the Hydra job, then (optionally) its small files for the launching machine."""
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    ret = run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    files = _job_files(ret.hydra_cfg.hydra.runtime.output_dir) if fetch_files and ret.hydra_cfg else {}
    return ret, files


def _write_missing(output_dir: str, files: dict[str, bytes]) -> int:
    """Write the job's files that this machine lacks (it did not share the worker's disk); returns how many."""
    written = 0
    for rel, data in files.items():
        target = Path(output_dir) / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
            written += 1
    return written


def _job_dir(sweep_config: DictConfig) -> Path:
    """The job's output dir as its worker would have made it (its `${hydra:...}` interpolations resolved)."""
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(sweep_config)
    try:
        return Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
    finally:
        if before is not None:
            HydraConfig.instance().cfg = before


def _record_lost_job(sweep_config: DictConfig, overrides: Sequence[str], exc: BaseException) -> JobReturn:
    """A job whose worker died never wrote its outcome: write its config and a `failed: <reason>` line to its job
    log (what the sweep summary reads), and return it as a finished job whose value says it failed, so the other
    jobs and the summary go on (a FAILED JobReturn would end the multirun)."""
    reason = f"the Ray worker running this job died ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})"
    job_dir = _job_dir(sweep_config)
    try:
        (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        task_cfg = OmegaConf.masked_copy(sweep_config, [k for k in sweep_config if k != "hydra"])
        if not (job_dir / ".hydra" / "config.yaml").exists():
            OmegaConf.save(task_cfg, job_dir / ".hydra" / "config.yaml")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(job_dir / f"{sweep_config.hydra.job.name}.log", "a") as handle:
            handle.write(f"[{stamp},000][{__name__}][ERROR] - failed: {reason}\n")
    except OSError as write_error:
        log.warning("could not record the lost job in %s: %s", job_dir, write_error)
    log.error("job %s failed: %s", " ".join(overrides), reason)
    ret = JobReturn(overrides=list(overrides), cfg=sweep_config, hydra_cfg=None, status=JobStatus.COMPLETED)
    ret.return_value = {"status": "FAILED", "error": reason}
    return ret


class RayLauncher(Launcher):
    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_job: float = 1.0,
        max_retries: int = 0,
        fetch_job_files: bool = True,
        init: dict[str, Any] | None = None,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.cpus_per_job = cpus_per_job
        self.max_retries = max_retries
        self.fetch_job_files = fetch_job_files
        self.init = dict(init or {})
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context

    def _connect(self) -> Any:
        import ray

        if ray.is_initialized():
            return ray
        kwargs: dict[str, Any] = {"log_to_driver": True, **self.init}
        if self.address:
            kwargs["address"] = self.address
        else:  # a local instance: its size, and no dashboard process (it needs ray[default] and costs a core)
            kwargs.setdefault("include_dashboard", False)
            if self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
        ray.init(**kwargs)
        res = ray.cluster_resources()
        log.info(
            "Ray: %s, %g CPUs on %d node(s), %g CPU(s) per job",
            f"cluster at {self.address}" if self.address else "local instance",
            res.get("CPU", 0),
            len([n for n in ray.nodes() if n.get("Alive")]),
            self.cpus_per_job,
        )
        return ray

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        ray = self._connect()
        remote = ray.remote(num_cpus=self.cpus_per_job, max_retries=self.max_retries)(_run_job_remote)
        remote = remote.options(name="tinyflow_job")
        log.info("Ray launcher: %d jobs, sweep dir %s", len(job_overrides), self.config.hydra.sweep.dir)

        pending = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"ray_{idx}"
                sweep_config.hydra.job.num = idx
            ref = remote.remote(
                self.hydra_context, sweep_config, self.task_function, Singleton.get_state(), self.fetch_job_files
            )
            pending.append((ref, sweep_config, overrides))

        results: list[JobReturn] = []
        for ref, sweep_config, overrides in pending:  # in job order; each waits only for its own task
            try:
                ret, files = ray.get(ref)
            except ray.exceptions.RayError as exc:
                results.append(_record_lost_job(sweep_config, overrides, exc))
                continue
            if files and ret.hydra_cfg is not None:
                written = _write_missing(ret.hydra_cfg.hydra.runtime.output_dir, files)
                if written:
                    num = ret.hydra_cfg.hydra.job.num
                    log.info("job %d ran on another machine: %d of its files brought back", num, written)
            results.append(ret)
        return results
