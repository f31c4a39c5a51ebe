"""`hydra/launcher=ray`: a multirun's jobs as Ray tasks, on a local Ray instance or an existing cluster.

A thin launcher over Ray's public API (`ray.init`, `ray.remote`, `ray.wait`) rather than the `hydra-ray-launcher`
package, for two reasons measured with hydra-ray-launcher 1.2.2 and ray 2.60 (docs/design.md §16): its
`cloudpickle<3` pin conflicts with joblib 1.6 (which needs cloudpickle>=3, and joblib is what `hydra/launcher=joblib`
runs on), and a job whose worker process dies makes its `ray.get` raise, which ends the whole multirun — the other
jobs' results and the sweep summary are lost. Here every job comes back: a job that raised returns its error (the
task function's own handling), a job whose worker died is recorded as failed in its output directory, so the sweep
summary lists it with the reason.
"""

from hydra_plugins.tinyflow_ray_launcher.config import RayLauncherConf

__all__ = ["RayLauncherConf"]
