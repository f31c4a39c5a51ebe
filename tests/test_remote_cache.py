"""The train cache and the accuracy memo through a tracking server, with no disk shared between jobs
(src/tinyflow/training/remote_cache.py): each job below has its own `cache.dir`, as on its own machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMALL_PIPELINE, cli_env
from mlflow_server import mlflow_server

pytestmark = pytest.mark.slow


def _job(tmp: Path, name: str, url: str, stages: str = "[space,train,search]") -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tinyflow", *SMALL_PIPELINE, f"stages={stages}", "device=stm32f746"]
    cmd += [f"tracking.uri={url}", f"hydra.run.dir={tmp / name / 'run'}", f"cache.dir={tmp / name / 'cache'}"]
    (tmp / name).mkdir()
    return subprocess.Popen(
        cmd, cwd=tmp / name, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_two_machines_train_once_and_share_accuracies(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    server_dir = tmp_path / "server"
    store = f"sqlite:///{(server_dir / 'store.db').as_posix()}"
    with mlflow_server(store, server_dir, artifacts=server_dir / "artifacts") as server:
        client = MlflowClient(tracking_uri=server.url)
        client.create_experiment("tinyflow")  # as EnsureTrackingStore does before a sweep's jobs start
        # two jobs at once, each with its own cache folder: one trains, the other waits for it and downloads
        jobs = {"a": _job(tmp_path, "a", server.url), "b": _job(tmp_path, "b", server.url, "[space,train]")}
        logs = {name: job.communicate(timeout=600)[0] for name, job in jobs.items()}
        for name, job in jobs.items():
            assert job.returncode == 0, logs[name][-4000:]
        # a third, later: the training downloaded, every subnet accuracy that a measured looked up
        late = _job(tmp_path, "c", server.url)
        logs["c"] = late.communicate(timeout=600)[0]
        assert late.returncode == 0, logs["c"][-4000:]

        exp = client.get_experiment_by_name("tinyflow")
        runs = client.search_runs([exp.experiment_id])
        claims = client.search_registered_models()

    parents = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    by_dir = {Path(r.data.tags["output_dir"]).parent.name: r for r in parents.values()}
    assert sorted(by_dir) == ["a", "b", "c"]
    assert sorted(by_dir[n].data.tags["train.cache"] for n in "ab") == ["hit", "miss"]
    assert by_dir["c"].data.tags["train.cache"] == "hit"
    assert len({r.data.tags["train.cache_key"] for r in parents.values()}) == 1
    trainer = next(n for n in "ab" if by_dir[n].data.tags["train.cache"] == "miss")
    waiter = "b" if trainer == "a" else "a"
    # started together, the waiter normally finds the key claimed and waits ("... is training ... on another
    # machine; waiting for its result"); on a very slow host it may arrive after the entry was published. Either
    # way it does not train: its tag is `hit` (above) and it reused the trainer's run
    assert f"reusing the training of run {by_dir[trainer].info.run_id}" in logs[waiter], logs[waiter][-3000:]
    assert "published" in logs[trainer]
    # the waiter's supernet is the trainer's, byte for byte: both searched the same checkpoint
    ckpts = {n: next((tmp_path / n / "cache" / "train").glob("*/*.ckpt")).read_bytes() for n in "abc"}
    assert ckpts["a"] == ckpts["b"] == ckpts["c"]
    assert not claims, [m.name for m in claims]  # the claim is released after training

    search = {
        Path(parents[r.data.tags["mlflow.parentRunId"]].data.tags["output_dir"]).parent.name: r
        for r in runs
        if r.data.tags.get("stage") == "search"
    }
    assert sorted(search) == ["a", "c"]  # b trains (or waits) only
    assert search["a"].data.metrics["accuracy_memo_misses"] > 0
    assert search["c"].data.metrics["accuracy_memo_misses"] == 0
    assert search["c"].data.metrics["accuracy_memo_hits"] > 0
    assert "subnet accuracies pulled from" in logs["c"]


def test_a_server_whose_artifacts_are_on_its_own_disk_keeps_the_caches_local(tmp_path: Path, caplog) -> None:
    """An experiment made before the server (straight in the sqlite file) keeps artifacts at a local path that other
    machines cannot reach: the remote caches turn off with one log line, however often they are asked."""
    from types import SimpleNamespace

    from mlflow.tracking import MlflowClient

    from tinyflow.training import remote_cache

    store = f"sqlite:///{(tmp_path / 'store.db').as_posix()}"
    MlflowClient(tracking_uri=store).create_experiment("tinyflow", (tmp_path / "local").as_uri())
    with mlflow_server(store, tmp_path / "server") as server:
        run = MlflowClient(tracking_uri=server.url).create_run("1")
        tracker = SimpleNamespace(uri=server.url, experiment="tinyflow", run_id=run.info.run_id)
        with caplog.at_level("WARNING", logger="tinyflow.training.remote_cache"):
            assert remote_cache.RemoteStore.of(tracker) is None
            assert remote_cache.RemoteStore.of(tracker) is None
    lines = [r.getMessage() for r in caplog.records if r.name == "tinyflow.training.remote_cache"]
    assert len(lines) == 1 and "a path on one machine's disk" in lines[0] and "stay local" in lines[0], lines
