"""MLflow tracking: one parent run per Hydra job, one nested child run per stage.

The pipeline activates the job's tracker (`with activate(tracker):`); stages and plugins log through
`active_tracker()` (the running job's tracker, or a no-op tracker outside a pipeline), so they never deal with run
ids and a tracker written only to `tinyflow.contracts.Tracker` receives every call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

import tinyflow

if TYPE_CHECKING:
    from tinyflow.contracts import Tracker

log = logging.getLogger(__name__)

_MAX_PARAM_LEN = 6000


def default_tracking_uri() -> str:
    """`sqlite:///<repo>/outputs/mlflow.db`, absolute, so every job and the UI agree on one store."""
    return f"sqlite:///{(tinyflow.OUTPUTS_DIR / 'mlflow.db').as_posix()}"


def resolve_uri(uri: str | None) -> str:
    """Default the URI, refuse MLflow's file store, and create the sqlite file's folder."""
    uri = uri or os.environ.get("TINYFLOW_TRACKING_URI") or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    elif "://" not in uri or uri.startswith("file:"):
        from tinyflow.errors import ConfigError

        raise ConfigError(
            f"tracking.uri = {uri!r} is a folder; MLflow's file store is refused by current MLflow. "
            "Use a database URI such as `tracking.uri=sqlite:///$PWD/outputs/mlflow.db`."
        )
    return uri


def ensure_store(uri: str, experiment: str) -> str:
    """Create the database (schema migrations) and the experiment; return the experiment id.

    Called once before parallel jobs start so they never race on creating either.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(experiment)
    except Exception:  # another process created it in between
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of a nested dict/list as dotted keys (`device.sram_kb`)."""
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(node, list) and any(isinstance(v, dict | list) for v in node):
        for i, v in enumerate(node):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = node
    return out


class NullTracker:
    """Accepts every call and records nothing (outside a pipeline, or `tracking=none`)."""

    run_id: str | None = None
    parent_id: str | None = None

    def prepare(self) -> None: ...

    @contextlib.contextmanager
    def job(self, cfg: Any, tags: dict[str, str]) -> Iterator[NullTracker]:
        yield self

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[NullTracker]:
        yield self

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str, artifact_path: str | None = None) -> None: ...
    def log_figure(self, figure: Any, name: str) -> None: ...
    def log_text(self, text: str, name: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_parent_metrics(self, metrics: dict[str, float]) -> None: ...
    def log_onnx_model(self, path: str, name: str = "model") -> None: ...


class MlflowTracker:
    """Logs to an MLflow store with explicit run ids (safe in joblib worker processes)."""

    def __init__(self, uri: str | None = None, experiment: str = "tinyflow", log_config: bool = True):
        self.uri = resolve_uri(uri)
        self.experiment = experiment
        self.log_config = log_config
        self.parent_id: str | None = None
        self.child_id: str | None = None
        self._client: Any = None

    # ---- runs ------------------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    @property
    def run_id(self) -> str | None:
        return self.child_id or self.parent_id

    def prepare(self) -> None:
        """Create the database and the experiment before parallel jobs start (they would race on them)."""
        ensure_store(self.uri, self.experiment)

    @contextlib.contextmanager
    def job(self, cfg: Any, tags: dict[str, str]) -> Iterator[MlflowTracker]:
        """The parent run of one Hydra job: tags, resolved config (artifact + params)."""
        exp_id = ensure_store(self.uri, self.experiment)
        run = self.client.create_run(exp_id, run_name=tags.get("run_name"), tags={k: str(v) for k, v in tags.items()})
        self.parent_id = run.info.run_id
        try:
            if isinstance(cfg, DictConfig):
                container = OmegaConf.to_container(cfg, resolve=True)
                if self.log_config:
                    self.client.log_text(self.parent_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
                self._log_params_to(self.parent_id, flatten(container))
            yield self
        except BaseException as exc:
            self._fail(self.parent_id, exc)
            raise
        else:
            self.client.set_terminated(self.parent_id, "FINISHED")
        finally:
            self.parent_id = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[MlflowTracker]:
        """A nested child run for one stage, with its wall time."""
        assert self.parent_id is not None, "stage() outside job()"
        parent = self.client.get_run(self.parent_id)
        run = self.client.create_run(
            parent.info.experiment_id,
            run_name=name,
            tags={"mlflow.parentRunId": self.parent_id, "stage": name},
        )
        self.child_id = run.info.run_id
        start = time.perf_counter()
        try:
            yield self
        except BaseException as exc:
            self.client.log_metric(self.child_id, "wall_time_s", time.perf_counter() - start)
            self._fail(self.child_id, exc)
            raise
        else:
            self.client.log_metric(self.child_id, "wall_time_s", time.perf_counter() - start)
            self.client.set_terminated(self.child_id, "FINISHED")
        finally:
            self.child_id = None

    def _fail(self, run_id: str, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        try:
            self.client.set_tag(run_id, "error", message[:5000])
            self.client.log_text(run_id, "".join(traceback.format_exception(exc)), "error.txt")
            self.client.set_terminated(run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        except Exception:  # never hide the original error behind a tracking error
            log.exception("could not mark MLflow run %s as failed", run_id)

    # ---- logging ----------------------------------------------------------------------------------------
    def _log_params_to(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_params(self, params: dict[str, Any]) -> None:
        self._log_params_to(self.run_id, flatten(params))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_parent_metrics(self, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
        if items and self.parent_id:
            self.client.log_batch(self.parent_id, metrics=items)

    def set_tags(self, tags: dict[str, str], parent: bool = True) -> None:
        """Tags on the parent run (the job's summary) by default."""
        run_id = self.parent_id if parent and self.parent_id else self.run_id
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_figure(self, figure: Any, name: str) -> None:
        self.client.log_figure(self.run_id, figure, name)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_onnx_model(self, path: str, name: str = "model") -> None:
        """`mlflow.onnx.log_model` into the current run."""
        import mlflow
        import mlflow.onnx
        import onnx

        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=self.run_id, nested=True):
            # pinned requirements: MLflow's own inference re-imports the model in a subprocess (~5 s a model)
            import onnxruntime

            reqs = [f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"]
            mlflow.onnx.log_model(onnx.load(path), name=name, pip_requirements=reqs)


_activated: list[Tracker] = []  # innermost last; a module global (not a context variable) so threads see it too


@contextlib.contextmanager
def activate(tracker: Tracker) -> Iterator[Tracker]:
    """Make `tracker` what `active_tracker()` returns inside the block (the pipeline wraps each job in it)."""
    _activated.append(tracker)
    try:
        yield tracker
    finally:
        _activated.pop()


def active_tracker() -> Tracker:
    """The tracker activated by the running pipeline, or a NullTracker outside one."""
    return _activated[-1] if _activated else NullTracker()
