"""The train cache and the accuracy memo across machines, through an MLflow tracking server (docs/design.md §16).

The local caches (`tinyflow.training.cache`, `tinyflow.search.accuracy_memo`) assume one disk: a file lock, a
folder of entries, a sqlite file. Jobs on other machines share only the tracking server, so with
`tracking.uri=http(s)://...` the caches also go through its store:

- **train cache**: a finished training's entry (checkpoint + `result.json`, digest included) is logged as artifacts
  `train_cache/<key>/` of the train stage's run, tagged `tinyflow.train_cache_entry=<key>`; a job missing the key
  locally downloads it into its local cache, where the usual digest check applies. Jobs on different machines that
  need the same key train it once: the first creates a registered model named after the key (the server refuses a
  second one, so the claim is atomic) and trains, with a heartbeat tag every 30 s; the others wait for its entry —
  or take the claim over when its run ends without one or its heartbeat stops. The claim is deleted after.
- **accuracy memo**: the search stage pulls the rows that other jobs published for its evaluation key (the
  supernet checkpoint's bytes, data, trainer, code) into its local memo before searching, and publishes its memo
  (`accuracy_memo/<key>.json`, tag `tinyflow.accuracy_memo=<key>`) after. Rows measured by jobs running at the same
  moment on other machines are not shared until they finish.

With a sqlite store (one machine) all of this is off: the local caches already share one disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENTRY_TAG = "tinyflow.train_cache_entry"
HEARTBEAT_TAG = "tinyflow.train_cache_heartbeat"
MEMO_TAG = "tinyflow.accuracy_memo"
HEARTBEAT_S = 30.0
#: a claim whose heartbeat is older than this is taken to be dead (its machine may not be able to say so)
STALE_S = 300.0
POLL_S = 3.0
#: how many of the latest published memos of one key are merged (each holds everything its job had seen)
MEMOS_PULLED = 5
_WARNED: set[str] = set()  # servers already reported unusable by this process (one log line each)


def server_uri(tracker: Any) -> str | None:
    """The tracker's URI when it is a tracking server (http/https), else None."""
    uri = str(getattr(tracker, "uri", "") or "")
    return uri if uri.startswith(("http://", "https://")) else None


class RemoteStore:
    """The cache's view of the tracking server: runs tagged with keys, artifacts under them."""

    def __init__(self, uri: str, experiment: str, run_id: str):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            raise RuntimeError(f"experiment {experiment!r} not found on {uri}")
        location = str(exp.artifact_location)
        if location.startswith(("file:", "/")) or ":" not in location:  # a local path, absolute or relative
            raise RuntimeError(
                f"experiment {experiment!r} keeps its artifacts at {location}, a path on one machine's disk, not "
                "reachable through the server; use an experiment created through a server started with "
                "--serve-artifacts (or an object store)"
            )
        self.experiment_id = exp.experiment_id
        self.run_id = run_id

    @classmethod
    def of(cls, tracker: Any) -> RemoteStore | None:
        uri = server_uri(tracker)
        run_id = getattr(tracker, "run_id", None)
        if uri is None or run_id is None:
            return None
        try:
            return cls(uri, str(getattr(tracker, "experiment", "tinyflow")), run_id)
        except Exception as exc:  # the server is the job's store: a failure here shows up in tracking too
            if uri in _WARNED:
                return None
            _WARNED.add(uri)
            log.warning(
                "remote cache: tracking server %s not usable (%s); the caches stay local to this machine", uri, exc
            )
            return None

    def runs_tagged(self, tag: str, value: str) -> list[Any]:
        """Runs of the experiment whose `tag` is `value`, oldest first."""
        query = f"tags.`{tag}` = '{value}'"
        order = ["attributes.start_time ASC"]
        return list(self.client.search_runs([self.experiment_id], query, order_by=order, max_results=200))

    def set_tag(self, tag: str, value: str) -> None:
        self.client.set_tag(self.run_id, tag, value)


# ---- train cache ----------------------------------------------------------------------------------------------
def _download_entry(store: RemoteStore, run: Any, key: str, root: Path) -> bool:
    """Download `train_cache/<key>/` of `run` into `<root>/<key>` (whole or not at all)."""
    entry = root / key
    if entry.exists():
        return True
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        got = Path(store.client.download_artifacts(run.info.run_id, f"train_cache/{key}", str(tmp)))
        try:
            got.rename(entry)
        except OSError:  # another job of this machine put it there first
            if not entry.exists():
                raise
        return True
    except Exception as exc:
        log.warning("train cache: could not download %s from run %s (%s); training here", key, run.info.run_id, exc)
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _claim_alive(run: Any) -> bool:
    """Whether the run holding a claim still trains: RUNNING, with a heartbeat younger than STALE_S."""
    if run.info.status != "RUNNING":
        return False
    beat = run.data.tags.get(HEARTBEAT_TAG)
    last = float(beat) if beat else run.info.start_time / 1000
    return time.time() - last < STALE_S


def _claim_name(key: str) -> str:
    return f"tinyflow-train-claim-{key}"


def _fetch_or_claim(store: RemoteStore, key: str, root: Path) -> bool:
    """Download the entry when another job published it; else claim the key — a registered model named after it,
    which the server creates once (the claim is atomic) — or wait for the live job holding the claim. True when the
    entry is now local, False when this job holds the claim and is to train."""
    from mlflow.exceptions import MlflowException

    waited = False
    while True:
        published = store.runs_tagged(ENTRY_TAG, key)
        if published and _download_entry(store, published[-1], key, root):
            if waited:
                log.info("train cache: the training of %s finished on another machine; using it", key)
            return True
        try:
            store.client.create_registered_model(_claim_name(key), tags={"run_id": store.run_id, "key": key})
            return False
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        holder = store.client.get_registered_model(_claim_name(key)).tags.get("run_id", "")
        try:
            alive = _claim_alive(store.client.get_run(holder))
        except MlflowException:
            alive = False
        if not alive:
            if not store.runs_tagged(ENTRY_TAG, key):  # it ended without an entry: free the claim, try again
                log.info("train cache: the run that claimed %s (%s) stopped without a result; claiming it", key, holder)
                with contextlib.suppress(MlflowException):
                    store.client.delete_registered_model(_claim_name(key))
            continue
        if not waited:
            log.info("train cache: run %s is training %s on another machine; waiting for its result", holder, key)
            waited = True
        time.sleep(POLL_S)


@contextlib.contextmanager
def _heartbeat(store: RemoteStore) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):
                store.set_tag(HEARTBEAT_TAG, f"{time.time():.0f}")

    thread = threading.Thread(target=beat, name="train-cache-heartbeat", daemon=True)
    store.set_tag(HEARTBEAT_TAG, f"{time.time():.0f}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@contextlib.contextmanager
def shared_training(tracker: Any, cache: Any, key: str) -> Iterator[None]:
    """Around the local train cache's lookup-or-train (holding its local lock): fetch the entry of `key` from the
    tracking server or elect one trainer across machines before; publish the entry this job stored after."""
    entry = Path(cache.root) / key
    store = None if entry.exists() else RemoteStore.of(tracker)
    if store is None:
        yield
        return
    try:
        if _fetch_or_claim(store, key, Path(cache.root)):
            yield
            return
    except Exception as exc:  # the server cannot coordinate: this job trains on its own
        log.warning("train cache: no shared training through the tracking server (%s); training here", exc)
        yield
        return
    try:
        with _heartbeat(store):
            yield
        if (entry / "result.json").is_file():
            try:
                store.client.log_artifacts(store.run_id, str(entry), f"train_cache/{key}")
                store.set_tag(ENTRY_TAG, key)  # last: a run with the tag has the whole entry
                log.info("train cache: published %s to the tracking server for jobs on other machines", key)
            except Exception as exc:
                log.warning("train cache: could not publish %s to the tracking server (%s)", key, exc)
    finally:
        with contextlib.suppress(Exception):
            store.client.delete_registered_model(_claim_name(key))


# ---- accuracy memo --------------------------------------------------------------------------------------------
def _rows(path: Path) -> list[tuple[str, str, float]]:
    with contextlib.closing(sqlite3.connect(path, timeout=60.0)) as db:
        return [(a, s, float(v)) for a, s, v in db.execute("SELECT arch, split, value FROM accuracy")]


def pull_accuracies(tracker: Any, memo: Any) -> int:
    """Merge the accuracies other jobs published for this memo's evaluation key into the local memo; returns how
    many rows were new here."""
    store = None if memo is None else RemoteStore.of(tracker)
    if store is None:
        return 0
    key = Path(memo.path).stem
    new = 0
    try:
        runs = store.runs_tagged(MEMO_TAG, key)[-MEMOS_PULLED:]
        with tempfile.TemporaryDirectory() as tmp, contextlib.closing(sqlite3.connect(memo.path, timeout=60.0)) as db:
            for run in runs:
                rows = json.loads(
                    Path(store.client.download_artifacts(run.info.run_id, f"accuracy_memo/{key}.json", tmp)).read_text()
                )
                with db:
                    before = db.total_changes
                    db.executemany("INSERT OR IGNORE INTO accuracy VALUES (?, ?, ?)", [tuple(r) for r in rows])
                    new += db.total_changes - before
    except Exception as exc:
        log.warning("search: could not pull subnet accuracies from the tracking server (%s); measuring them here", exc)
        return new
    if runs:
        log.info("search: %d subnet accuracies pulled from %d earlier job(s) on the tracking server", new, len(runs))
    return new


def push_accuracies(tracker: Any, memo: Any) -> None:
    """Publish this job's memo (every row it holds) for jobs on other machines."""
    store = None if memo is None else RemoteStore.of(tracker)
    if store is None:
        return
    key = Path(memo.path).stem
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{key}.json"
            path.write_text(json.dumps(_rows(Path(memo.path))))
            store.client.log_artifact(store.run_id, str(path), "accuracy_memo")
        store.set_tag(MEMO_TAG, key)
    except Exception as exc:
        log.warning("search: could not publish subnet accuracies to the tracking server (%s)", exc)
