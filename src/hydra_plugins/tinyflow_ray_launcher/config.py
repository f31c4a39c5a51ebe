"""The launcher's options (`hydra.launcher.*`), registered as `hydra/launcher=ray`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class RayLauncherConf:
    _target_: str = "hydra_plugins.tinyflow_ray_launcher.launcher.RayLauncher"
    # null: start a local Ray instance for this sweep; "auto": join the cluster of `ray start --head` on this
    # machine; "ray://host:10001" or "host:6379": a remote cluster
    address: str | None = None
    # CPUs of the local instance (ignored when joining a cluster); null = all of this machine's
    num_cpus: int | None = None
    # CPUs one job reserves: at most cluster CPUs / cpus_per_job jobs run at once (and OMP_NUM_THREADS, if unset)
    cpus_per_job: float = 1.0
    # times Ray reruns a job whose worker died (0: record it as failed at once)
    max_retries: int = 0
    # bring back each job's small files (config, context, report, log) when the job ran on a machine whose disk
    # the launching machine does not share, so the sweep summary sees every job
    fetch_job_files: bool = True
    # further keyword arguments of ray.init (e.g. runtime_env, object_store_memory)
    init: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayLauncherConf, provider="tinyflow")
