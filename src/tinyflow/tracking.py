"""MLflow tracking: one parent run per Hydra job, one nested child run per stage.

The pipeline activates the job's tracker (`with activate(tracker):`); stages and plugins log through
`active_tracker()` (the running job's tracker, or a no-op tracker outside a pipeline), so they never deal with run
ids and a tracker written only to `tinyflow.contracts.Tracker` receives every call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
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
#: seconds the first contact with a tracking server may take; MLflow's own retries back off for minutes
SERVER_CHECK_TIMEOUT_S = 5.0
_SQLITE_HEADER = b"SQLite format 3\x00"
_NOT_FAILED = (
    "Nothing has run yet, and no MLflow run could be opened there or marked FAILED, so this message is the only "
    "record of the failure."
)


#: experiment tags the MLflow UI reads: classic ML opens on the runs table, not on the GenAI overview
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
#: the parent run's LoggedModel of the deployed int8 network
DEPLOYED_MODEL_NAME = "deployed_int8"


def default_tracking_uri() -> str:
    """`sqlite:///<repo>/outputs/mlflow.db`, absolute, so every job and the UI agree on one store."""
    return f"sqlite:///{(tinyflow.OUTPUTS_DIR / 'mlflow.db').as_posix()}"


def resolve_uri(uri: str | None) -> str:
    """Default the URI, refuse MLflow's file store, and create the sqlite file's folder."""
    uri = uri or os.environ.get("TINYFLOW_TRACKING_URI") or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        folder = sqlite_path(uri).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _store_problem(exc, uri) from None
    elif "://" not in uri or uri.startswith("file:"):
        from tinyflow.errors import ConfigError

        raise ConfigError(
            f"tracking.uri = {uri!r} is a folder; MLflow's file store is refused by current MLflow. "
            "Use a database URI such as `tracking.uri=sqlite:///$PWD/outputs/mlflow.db`."
        )
    return uri


def sqlite_path(uri: str) -> Path:
    """The database file of a `sqlite:///` URI (query string dropped)."""
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def default_artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: `<the sqlite file's folder>/mlartifacts` — next to the store
    `tracking.uri` names, never MLflow's default `<cwd>/mlruns`. None (the server decides) for a server URI."""
    if uri.startswith("sqlite:///"):
        return (sqlite_path(uri).resolve().parent / "mlartifacts").as_uri()
    return None


def _store_problem(exc: BaseException, uri: str) -> BaseException:
    from tinyflow.errors import environment_problem

    return environment_problem(exc, store=uri) or exc


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An inter-process lock on a sqlite store (`<db>.lock`, fcntl), so one process at a time creates its schema and
    experiment; a no-op for server URIs (the server serialises) and where fcntl is missing."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock_file = sqlite_path(uri).with_name(sqlite_path(uri).name + ".lock")
    try:
        handle = open(lock_file, "a")  # noqa: SIM115 - held for the block
    except OSError as exc:
        raise _store_problem(exc, uri) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_store(uri: str) -> None:
    """Fail in seconds, with one paragraph (`EnvironmentProblem`), on a tracking server that cannot be reached or a
    `sqlite:///` file that is not a database — before MLflow's retries turn either into minutes or a traceback."""
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif uri.startswith("sqlite:///"):
        _check_sqlite_file(uri)


def _check_server(uri: str) -> None:
    """One request, no retries, to the endpoint MLflow calls first. An MLflow server answers it with 200, or 404
    and a JSON `error_code`; 401 / 403 are left to MLflow's credentials. Anything else (no answer, a 5xx that MLflow
    would retry for minutes, a 404 page of something else) is one paragraph."""
    import requests

    from tinyflow.errors import EnvironmentProblem

    probe = uri.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name"
    try:
        answer = requests.get(probe, params={"experiment_name": "tinyflow"}, timeout=SERVER_CHECK_TIMEOUT_S)
    except requests.RequestException as exc:
        raise EnvironmentProblem(_server_problem(uri, f"cannot be reached ({_why_unreachable(exc)})")) from None
    if answer.status_code in (200, 401, 403) or (answer.status_code == 404 and "error_code" in answer.text):
        return
    raise EnvironmentProblem(
        _server_problem(
            uri,
            f"answers HTTP {answer.status_code} to MLflow's first request: it is not an MLflow "
            "tracking server, or a proxy in front of it cannot reach it",
        )
    )


def _server_problem(uri: str, what: str) -> str:
    return (
        f"the tracking server tracking.uri={uri} {what}. Start the server (e.g. `mlflow server --host 127.0.0.1 "
        "--port 5000`) or fix `tracking.uri=...`; or track locally with `tracking.uri=sqlite:///$PWD/outputs/"
        f"mlflow.db`, or not at all with `tracking=none`. {_NOT_FAILED}"
    )


def _why_unreachable(exc: BaseException) -> str:
    """The short reason of a failed request: `Connection refused`, `timed out after 5 s`, ..."""
    import requests

    if isinstance(exc, requests.Timeout):
        return f"no answer within {SERVER_CHECK_TIMEOUT_S:g} s"
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    return found.group(1).strip() if found else type(exc).__name__


def _check_sqlite_file(uri: str) -> None:
    """An existing, non-empty store file must start with SQLite's header (an empty or missing one is created)."""
    path = sqlite_path(uri)
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_HEADER))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return  # created by MLflow, or worded by `environment_problem` when it cannot be
    if head and head != _SQLITE_HEADER:
        from tinyflow.errors import EnvironmentProblem

        raise EnvironmentProblem(
            f"the tracking store {path} (tracking.uri={uri}) is not an SQLite database: the file does not start "
            "with SQLite's header. Point `tracking.uri` at an MLflow database or a new file, e.g. "
            "`tracking.uri=sqlite:///$PWD/outputs/mlflow.db`, or move the file away (or use `tracking=none`). "
            f"{_NOT_FAILED}"
        )


def ensure_store(uri: str, experiment: str, artifact_location: str | None = None) -> str:
    """Check the store (`check_store`), then create the database (schema migrations) and the experiment under
    `store_lock`; return the experiment id.

    Two jobs starting on a new sqlite file would otherwise both run MLflow's migrations (one fails with alembic's
    "Online migration expected to match one row"). A store that cannot be written raises `EnvironmentProblem`.
    """
    from mlflow.tracking import MlflowClient

    check_store(uri)
    try:
        with store_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                location = artifact_location or default_artifact_location(uri)
                return client.create_experiment(experiment, location, tags=EXPERIMENT_TAGS)
            tag_experiment(client, exp)
            return exp.experiment_id
    except Exception as exc:
        problem = _store_problem(exc, uri)
        if problem is exc:
            raise
        raise problem from None


def tag_experiment(client: Any, experiment: Any) -> None:
    """Set `EXPERIMENT_TAGS` on an existing experiment that lacks them (made by an older tinyflow, or by hand)."""
    for key, value in EXPERIMENT_TAGS.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)


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
    def set_tags(self, tags: dict[str, str], parent: bool = True) -> None: ...
    def log_parent_metrics(self, metrics: dict[str, float]) -> None: ...
    def log_onnx_model(self, path: str, name: str = "model") -> None: ...
    def log_deployed_model(self, path: str, metrics: dict[str, float], params: dict[str, Any]) -> str | None: ...


class MlflowTracker:
    """Logs to an MLflow store with explicit run ids (safe in joblib worker processes)."""

    def __init__(
        self,
        uri: str | None = None,
        experiment: str = "tinyflow",
        log_config: bool = True,
        artifact_location: str | None = None,
    ):
        self.uri = resolve_uri(uri)
        self.experiment = experiment
        self.log_config = log_config
        self.artifact_location = artifact_location
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
        ensure_store(self.uri, self.experiment, self.artifact_location)

    @contextlib.contextmanager
    def job(self, cfg: Any, tags: dict[str, str]) -> Iterator[MlflowTracker]:
        """The parent run of one Hydra job: tags, resolved config (artifact + params). Runs of this host whose
        process is gone (kill -9) are marked KILLED first; any way out of the block closes the run."""
        exp_id = ensure_store(self.uri, self.experiment, self.artifact_location)
        try:
            close_dead_runs(self.client, exp_id)
            all_tags = {**{k: str(v) for k, v in tags.items()}, **process_tags()}
            run = self.client.create_run(exp_id, run_name=tags.get("run_name"), tags=all_tags)
        except Exception as exc:
            problem = _store_problem(exc, self.uri)
            if problem is exc:
                raise
            raise problem from None
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
            tags={"mlflow.parentRunId": self.parent_id, "stage": name, **process_tags()},
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
        """FAILED with the reason (tag `error`, traceback in `error.txt`) — for errors and signals alike."""
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if type(exc).__name__ == "SIGTERMException":  # Lightning's, without a message
            message = "SIGTERMException: interrupted by SIGTERM"
        try:
            self.client.set_tag(run_id, "error", message[:5000])
            self.client.set_terminated(run_id, "FAILED")
            self.client.log_text(run_id, "".join(traceback.format_exception(exc)), "error.txt")
        except BaseException:  # never hide the original error behind a tracking error (nor a second signal)
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

    def log_deployed_model(self, path: str, metrics: dict[str, float], params: dict[str, Any]) -> str | None:
        """The deployed int8 ONNX file as an MLflow 3 LoggedModel (`DEPLOYED_MODEL_NAME`) whose source is the
        parent run, with `metrics` linked to it (and logged on the parent) and `params`, so the Models view lists a
        sweep's deployed models side by side; returns its model id (None outside a job)."""
        import mlflow
        import mlflow.onnx
        import onnx
        import onnxruntime

        if self.parent_id is None:
            return None
        from mlflow.entities import LoggedModelStatus, Metric

        mlflow.set_tracking_uri(self.uri)
        # created here, in the run's experiment (MLflow's fluent call would put it in the active experiment)
        model = self.client.create_logged_model(
            self.client.get_run(self.parent_id).info.experiment_id,
            name=DEPLOYED_MODEL_NAME,
            source_run_id=self.parent_id,
            params={k: str(v)[:_MAX_PARAM_LEN] for k, v in params.items()},
            model_type="int8 ONNX (deployed)",
        )
        reqs = [f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"]
        mlflow.onnx.log_model(
            onnx.load(path),
            name=DEPLOYED_MODEL_NAME,
            run_id=self.parent_id,
            model_id=model.model_id,
            pip_requirements=reqs,
        )
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0, model_id=model.model_id) for k, v in metrics.items() if v is not None]
        if items:
            self.client.log_batch(self.parent_id, metrics=items)
        if self.client.get_logged_model(model.model_id).status != LoggedModelStatus.READY:
            self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        return model.model_id


def _proc_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), '' where unknown: with the
    pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    """Tags naming the process that owns a run, so a later job can tell a run whose process died."""
    return {
        "tinyflow.host": socket.gethostname(),
        "tinyflow.pid": str(os.getpid()),
        "tinyflow.proc": _proc_start(os.getpid()),
    }


def _alive(pid: int, started: str) -> bool:
    if started and Path("/proc").is_dir():
        return _proc_start(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_dead_runs(client: Any, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of `experiment_id` started on this host by a process that no longer exists
    (kill -9, out of memory, power loss); returns their ids. Runs of other hosts are left alone (no way to tell)."""
    host = socket.gethostname()
    query = f"attributes.status = 'RUNNING' and tags.`tinyflow.host` = '{host}'"
    closed = []
    for run in client.search_runs([experiment_id], filter_string=query, max_results=1000):
        tags = run.data.tags
        try:
            pid = int(tags.get("tinyflow.pid", ""))
        except ValueError:
            continue
        if _alive(pid, tags.get("tinyflow.proc", "")):
            continue
        reason = f"process {pid} on {host} ended without closing this run (kill -9, out of memory or power loss)"
        client.set_tag(run.info.run_id, "error", f"KILLED: {reason}; marked by process {os.getpid()}")
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    if closed:
        log.warning("tracking: marked %d run(s) KILLED whose process had died: %s", len(closed), ", ".join(closed))
    return closed


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
