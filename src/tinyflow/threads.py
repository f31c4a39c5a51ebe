"""Share the machine: every tinyflow job caps torch's threads at its share of the cores (docs/design.md §16).

Torch runs as many intra-op threads as there are cores. Two jobs on one 2-core host then run four spinning OpenMP
threads against each other: measured 817 s each for a job that takes 89 s alone (136 s each with one thread). Here
a job's share is

    threads = usable cores // tinyflow jobs running at once   (at least 1)

- *usable cores*: the CPUs this process may run on (`os.sched_getaffinity`), capped by the cgroup's CPU quota
  (v2 `cpu.max`, v1 `cpu.cfs_quota_us`) where there is one;
- *jobs running at once*: the larger of what the launcher says (joblib's `n_jobs`; Ray grants `cpus_per_job`
  threads) and the live tinyflow jobs of this host in a registry folder (`jobs_dir()`): each job writes `<pid>`
  there when it starts and removes it when it ends; an entry whose process is gone is ignored and removed.

An explicit setting wins: `threads=<n>` in the config, else `OMP_NUM_THREADS` set by the user (never more than the
usable cores either way). The share is re-evaluated at each stage start and, during training, at an optimizer step
at most every `CHECK_EVERY_S` seconds, so a job that started alone gives threads back when a second one starts.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tinyflow.atomic import atomic_write_text
from tinyflow.errors import ConfigError

log = logging.getLogger(__name__)

#: the registry folder (tests, or a folder several containers share); default `jobs_dir()`
ENV_JOBS_DIR = "TINYFLOW_JOBS_DIR"
#: set by a sweep for its jobs: the launching process's OMP_NUM_THREADS ('' = unset). A launcher's workers get
#: OMP_NUM_THREADS from joblib (cores // n_jobs) or Ray (cpus_per_job); this says whether the *user* set it
ENV_SWEEP_OMP = "TINYFLOW_SWEEP_OMP_NUM_THREADS"
#: a training job looks at the registry again at most this often (at an optimizer step)
CHECK_EVERY_S = 2.0


# ---------------------------------------------------------------- usable cores
def usable_cores() -> int:
    """The CPUs this process may run on, capped by its cgroup's CPU quota (rounded down; at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, int(quota))
    return max(1, cores)


def cgroup_cpu_limit(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """The CPUs this process's cgroup quota allows (the tightest along its cgroup path, v2 `cpu.max` or v1
    `cpu.cfs_quota_us / cpu.cfs_period_us`), None without a quota or where it cannot be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    v2_bases = [root, root / "unified"]
    v1_bases = [root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"]
    candidates: list[tuple[Path, str]] = []
    paths: dict[str, str] = {"v2": "/", "v1": "/"}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            paths["v2"] = parts[2]
        elif "cpu" in parts[1].split(","):
            paths["v1"] = parts[2]
    for kind, bases in (("v2", v2_bases), ("v1", v1_bases)):
        rel = Path(paths[kind].lstrip("/"))
        for base in bases:
            folder = base / rel
            while True:  # the process's cgroup and every parent up to the mount
                candidates.append((folder, kind))
                if folder == base:
                    break
                folder = folder.parent
    limits = [x for x in (_read_quota(folder, kind) for folder, kind in candidates) if x is not None]
    return min(limits) if limits else None


def _read_quota(folder: Path, kind: str) -> float | None:
    try:
        if kind == "v2":
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota = (folder / "cpu.cfs_quota_us").read_text().strip()
        period = (folder / "cpu.cfs_period_us").read_text().strip()
        return None if int(quota) <= 0 else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


# ---------------------------------------------------------------- the registry of live jobs
def jobs_dir() -> Path:
    """`$TINYFLOW_JOBS_DIR`, else `$XDG_RUNTIME_DIR/tinyflow/jobs`, else `~/.cache/tinyflow/jobs` — one folder per
    host inside (a home folder several machines share must not count the other machines' jobs)."""
    given = os.environ.get(ENV_JOBS_DIR)
    if given:
        return Path(given)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        base = Path(runtime) / "tinyflow" / "jobs"
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = Path(cache) / "tinyflow" / "jobs"
    return base / socket.gethostname()


def _proc_start(pid: int) -> str:
    from tinyflow.tracking import _proc_start as start

    return start(pid)


def _alive(pid: int, started: str) -> bool:
    from tinyflow.tracking import _alive as alive

    return alive(pid, started)


_AT_EXIT: set[tuple[Path, int]] = set()


class Registry:
    """The live tinyflow jobs of this host: a file `<pid>` per job holding its process's start time (so a reused
    pid is not taken for the job)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else jobs_dir()

    def register(self, pid: int | None = None) -> bool:
        """Write `<pid>` atomically; False (and a debug line) where the folder cannot be written."""
        pid = os.getpid() if pid is None else pid
        try:  # the temporary name starts with "." (atomic_write_text), so `live` never reads a half-written entry
            atomic_write_text(self.root / str(pid), _proc_start(pid) + "\n")
        except OSError as exc:
            log.debug("threads: cannot register in %s (%s); counting the launcher's jobs only", self.root, exc)
            return False
        if (self.root, pid) not in _AT_EXIT:  # a job ended by an exception leaves through `with`; this is for the rest
            _AT_EXIT.add((self.root, pid))
            atexit.register(self.unregister, pid)
        return True

    def unregister(self, pid: int | None = None) -> None:
        pid = os.getpid() if pid is None else pid
        with contextlib.suppress(OSError):
            (self.root / str(pid)).unlink()

    def live(self) -> list[int]:
        """The registered pids whose process still runs; entries of processes that are gone are removed."""
        try:
            names = os.listdir(self.root)
        except OSError:
            return []
        pids = []
        for name in names:
            if not name.isdigit():
                continue
            entry = self.root / name
            try:
                started = entry.read_text().strip()
            except OSError:
                continue  # removed meanwhile
            if _alive(int(name), started):
                pids.append(int(name))
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
        return sorted(pids)


# ---------------------------------------------------------------- what the launcher says
@dataclass(frozen=True)
class Launcher:
    """What a sweep's launcher says about its jobs: how many run at once, how many threads each may use."""

    name: str = ""
    jobs: int | None = None  # jobs of the sweep running at once (joblib n_jobs)
    threads: int | None = None  # threads it grants each job (Ray cpus_per_job)

    def describe(self) -> str:
        if self.name == "joblib":
            return f"joblib runs {self.jobs} at once"
        if self.name == "ray":
            return f"Ray grants {self.threads} CPU(s) per job"
        return self.name


def launcher_of(node: Any, cores: int) -> Launcher:
    """The launcher of a multirun from its `hydra.launcher` config node (no launcher facts: `Launcher()`)."""
    try:
        return _launcher_of(node, cores)
    except (TypeError, ValueError):  # a value the launcher itself refuses: it says so, not this
        return Launcher()


def _launcher_of(node: Any, cores: int) -> Launcher:
    if node is None:
        return Launcher()
    target = str(_get(node, "_target_") or "")
    if "joblib" in target.lower():
        n = _get(node, "n_jobs")
        jobs = 1 if n is None else int(n)
        if jobs < 0:  # joblib: -1 = every CPU, -2 = all but one, ...
            jobs = cores + 1 + jobs
        return Launcher("joblib", jobs=max(1, jobs))
    if "ray" in target.lower():
        per_job = _get(node, "cpus_per_job")
        return Launcher("ray", threads=max(1, math.floor(float(per_job)))) if per_job is not None else Launcher("ray")
    return Launcher()  # the basic launcher runs one job at a time


def _get(node: Any, key: str) -> Any:
    if isinstance(node, DictConfig):
        return OmegaConf.select(node, key, default=None)
    return node.get(key) if isinstance(node, Mapping) else None


def hydra_launcher() -> Launcher:
    """The running Hydra job's launcher: only a multirun's jobs have one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return Launcher()
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return Launcher()
    return launcher_of(hc.get("launcher"), usable_cores())


# ---------------------------------------------------------------- the share
@dataclass(frozen=True)
class Share:
    threads: int
    cores: int
    jobs: int  # tinyflow jobs counted (this one included)
    why: str  # where the number came from, for the console line
    explicit: bool = False  # a setting: not re-evaluated

    def line(self) -> str:
        return f"threads: {self.threads} of {self.cores} core{'s' * (self.cores != 1)} ({self.why})"


def parse_setting(value: Any) -> int | None:
    """The config's `threads`: `auto` (or null) → None, else a count of at least 1."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1 or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"threads = {value!r}: give `auto` (a share of the cores) or a thread count of at least 1.")
    return n


def user_omp(env: Mapping[str, str]) -> int | None:
    """The OMP_NUM_THREADS the user set: in a sweep's job the launching process's (a launcher sets its own in its
    workers), else this process's; None where unset or not a count (`4,2` counts as 4)."""
    raw = env.get(ENV_SWEEP_OMP) if ENV_SWEEP_OMP in env else env.get("OMP_NUM_THREADS")
    try:
        n = int(str(raw).split(",")[0].strip())
    except (TypeError, ValueError):
        return None
    return n if n >= 1 else None


def decide(setting: int | None, cores: int, live_jobs: int, launcher: Launcher, env: Mapping[str, str]) -> Share:
    """This job's share: `threads=<n>` in the config, else the user's OMP_NUM_THREADS, else cores // jobs running
    at once (the larger of the registry's count, this job included, and the launcher's); never above `cores`."""
    cores = max(1, cores)
    if setting is not None:
        return _explicit(setting, cores, f"threads={setting} in the config")
    omp = user_omp(env)
    if omp is not None:
        return _explicit(omp, cores, f"OMP_NUM_THREADS={omp}")
    jobs = max(1, live_jobs, launcher.jobs or 1)
    threads = max(1, cores // jobs)
    why = f"{jobs} tinyflow job{'s' * (jobs != 1)} running"
    if launcher.jobs and launcher.jobs >= live_jobs and launcher.jobs > 1:
        why += f"; {launcher.describe()}"
    if launcher.threads is not None and launcher.threads < threads:
        threads = launcher.threads
        why += f"; {launcher.describe()}"
    return Share(threads, cores, jobs, why)


def _explicit(n: int, cores: int, why: str) -> Share:
    if n > cores:
        why += f", capped at the {cores} usable core{'s' * (cores != 1)}"
    return Share(min(n, cores), cores, 1, why, explicit=True)


# ---------------------------------------------------------------- one job
def _set_torch_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


_interop_done = False


def _set_interop(n: int) -> None:
    """Inter-op threads: settable once per process, before any inter-op work; skipped where torch refuses."""
    global _interop_done
    if _interop_done:
        return
    _interop_done = True
    import torch

    try:
        torch.set_num_interop_threads(n)
    except RuntimeError as exc:
        log.debug("threads: inter-op threads left at %d (%s)", torch.get_num_interop_threads(), exc)


class JobThreads:
    """One job's share, from start to end: `with JobThreads(...)` registers the job (the registry and the
    optimizer-step check); `start()` (after the config is validated) chooses and applies the share, prints it and
    logs it; `check()` re-evaluates it (stage starts; training steps through the hook). Leaving the block
    unregisters the job and gives torch its thread count back."""

    def __init__(
        self,
        setting: Any = "auto",
        registry: Registry | None = None,
        launcher: Launcher | None = None,
        env: Mapping[str, str] | None = None,
        every_s: float = CHECK_EVERY_S,
    ) -> None:
        self.setting = setting
        self.registry = registry if registry is not None else Registry()
        self.launcher = launcher if launcher is not None else Launcher()
        self.env = env if env is not None else os.environ
        self.every_s = every_s
        self.share: Share | None = None
        self.tracker: Any = None
        self._last = 0.0
        self._before: int | None = None
        self._hook: Any = None
        self._pid = os.getpid()  # a worker forked from the job (tinyflow.forked) is not the job: it never re-checks

    @classmethod
    def for_job(cls, cfg: DictConfig) -> JobThreads:
        return cls(setting=cfg.get("threads", "auto"), launcher=hydra_launcher())

    def __enter__(self) -> JobThreads:
        import torch

        self._before = torch.get_num_threads()
        self.registry.register()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.registry.unregister()
        if self._before is not None:
            _set_torch_threads(self._before)

    def decide(self) -> Share:
        setting = parse_setting(self.setting)
        live = self.registry.live()
        here = len(live) + (os.getpid() not in live)  # this job counts even where it could not register
        return decide(setting, usable_cores(), here, self.launcher, self.env)

    def start(self, tracker: Any = None) -> Share:
        """Choose and apply the share; print it; log it (param `threads_used`, tag `threads` on the job's run)."""
        self.tracker = tracker
        share = self.decide()
        self.share = share
        _set_torch_threads(share.threads)
        _set_interop(share.threads)
        self._last = time.monotonic()
        log.info(share.line())
        if tracker is not None:
            tracker.log_params({"threads_used": share.threads})
            tracker.set_tags({"threads": share.line().split(": ", 1)[1]})
        if not share.explicit and self._hook is None:
            from torch.optim.optimizer import register_optimizer_step_pre_hook

            self._hook = register_optimizer_step_pre_hook(self._on_step)
        return share

    def check(self, force: bool = True) -> Share | None:
        """Re-evaluate the share (at most every `every_s` seconds unless `force`); apply and report a change (metric
        `threads_used` of the running stage's run: the job's run keeps the metrics a sweep's runs are compared on)."""
        if self.share is None or self.share.explicit or os.getpid() != self._pid:
            # a forked worker (one thread, set by its pool) must not log, reset threads or write to the tracker
            return self.share
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return self.share
        self._last = now
        try:
            share = self.decide()
        except Exception as exc:  # never fail a job over its thread count
            log.debug("threads: re-evaluation skipped (%s)", exc)
            return self.share
        if share.threads != self.share.threads:
            _set_torch_threads(share.threads)
            log.info("%s, was %d", share.line(), self.share.threads)
            if self.tracker is not None:
                try:
                    self.tracker.log_metrics({"threads_used": float(share.threads)})
                except Exception as exc:
                    log.debug("threads: could not log the change (%s)", exc)
        self.share = share
        return share

    def _on_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.check(force=False)


# ---------------------------------------------------------------- a sweep
def announce_sweep(config: DictConfig, env: Any = None) -> Share | None:
    """At a multirun's start (launching process): print the share its jobs will take and record for them whether
    the user set OMP_NUM_THREADS (`ENV_SWEEP_OMP`; a launcher sets its own in its workers)."""
    env = os.environ if env is None else env
    env[ENV_SWEEP_OMP] = env.get("OMP_NUM_THREADS", "")
    try:
        cores = usable_cores()
        launcher = launcher_of(OmegaConf.select(config, "hydra.launcher"), cores)
        setting = parse_setting(config.get("threads", "auto"))
        others = len(Registry().live())  # jobs already running here, besides the sweep's
        share = decide(setting, cores, others + (launcher.jobs or 1), launcher, env)
    except Exception as exc:  # a bad `threads` value is reported by each job, with its run marked FAILED
        log.debug("threads: no sweep share (%s)", exc)
        return None
    log.info("sweep: %s", share.line().replace("threads: ", "threads per job: ", 1))
    return share


def sweep_finished(env: Any = None) -> None:
    env = os.environ if env is None else env
    env.pop(ENV_SWEEP_OMP, None)


if __name__ == "__main__":  # a look from outside: the live tinyflow jobs of this host
    cores = usable_cores()
    pids = Registry().live()
    print(f"{cores} usable cores; {len(pids)} tinyflow job(s) running here: {' '.join(map(str, pids)) or '-'}")
