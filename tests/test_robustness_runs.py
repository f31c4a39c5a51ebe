"""Issue 16, runs and signals: every exit path closes the job's MLflow runs; runs never share a folder; a resume
continues the same job (real processes, real signals, a real sqlite store)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, cli_env
from robustness_stages import plain


def _cmd(store_uri: str, run_dir: Path | str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tinyflow", *args, f"tracking.uri={store_uri}", f"hydra.run.dir={run_dir}"]


def _runs(store_uri: str) -> tuple[list, list]:
    client = MlflowClient(tracking_uri=store_uri)
    exp = client.get_experiment_by_name("tinyflow")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _start_sleeping(store_uri: str, run_dir: Path) -> subprocess.Popen[str]:
    """A job whose stage waits for a signal; returns once the stage runs."""
    proc = subprocess.Popen(
        _cmd(store_uri, run_dir, "stages=[stages_for_tests:ok,robustness:sleep]"),
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run_dir / "sleeping").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the sleeping stage never started"
        time.sleep(0.2)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_fails_the_runs_with_the_reason_and_a_nonzero_exit(store_uri, tmp_path: Path, sig, code) -> None:
    """Item 2: SIGTERM / SIGINT during a stage — exit 128+signal, parent and stage run FAILED, the signal named."""
    proc = _start_sleeping(store_uri, tmp_path / "run")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert f"interrupted by {signal.Signals(sig).name}" in err and "Traceback" not in err
    parents, children = _runs(store_uri)
    assert [r.info.status for r in parents] == ["FAILED"]
    assert sorted(r.info.status for r in children) == ["FAILED", "FINISHED"]
    for run in [*parents, *(c for c in children if c.info.status == "FAILED")]:
        assert run.data.tags["error"] == f"JobInterrupted: interrupted by {signal.Signals(sig).name}"


@pytest.mark.slow
def test_runs_left_running_by_kill_9_are_marked_killed_by_the_next_job(store_uri, tmp_path: Path) -> None:
    """Item 2: kill -9 leaves the parent and stage runs RUNNING; the next job in the store marks them KILLED (its
    own runs, in another process, are left alone while it runs)."""
    proc = _start_sleeping(store_uri, tmp_path / "killed")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    parents, children = _runs(store_uri)
    assert sorted(r.info.status for r in [*parents, *children]) == ["FINISHED", "RUNNING", "RUNNING"]
    later = subprocess.run(
        _cmd(store_uri, tmp_path / "later", "stages=[stages_for_tests:ok]"),
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert later.returncode == 0, later.stderr[-2000:]
    parents, children = _runs(store_uri)
    by_dir = {Path(r.data.tags["output_dir"]).name: r for r in parents}
    assert by_dir["killed"].info.status == "KILLED" and by_dir["later"].info.status == "FINISHED"
    assert "kill -9" in by_dir["killed"].data.tags["error"]
    assert sorted(r.info.status for r in children) == ["FINISHED", "FINISHED", "KILLED"]


@pytest.mark.slow
def test_two_jobs_started_in_the_same_second_get_their_own_folders(store_uri, tmp_path: Path) -> None:
    """Item 1: the default folder pattern (`<second>_<run id>`) — two jobs started together never share one."""
    pattern = f"{tmp_path / 'runs'}/${{now:%Y-%m-%d_%H-%M-%S}}_${{tf_run_id:}}"
    procs = [
        subprocess.Popen(
            _cmd(store_uri, pattern, "stages=[stages_for_tests:ok]", f"seed={seed}"),
            cwd=REPO,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.communicate()[1][-2000:]
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 2
    seeds = sorted(json.loads((f / "run_config.json").read_text())["seed"] for f in folders)
    assert seeds == [1, 2]
    parents, _ = _runs(store_uri)
    assert len({r.data.tags["output_dir"] for r in parents}) == 2


@pytest.mark.slow
def test_resume_last_takes_the_newest_run_of_this_config_and_refuses_another(run_cli, tmp_path: Path) -> None:
    """Item 3/8: `resume=last` skips a newer run of another config; a resume that changes a result key (the
    device) is refused with the keys that differ instead of skipping every stage and ending FINISHED."""
    env = cli_env()
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    stages = "stages=[stages_for_tests:ok,stages_for_tests:boom]"
    for name, seed in (("a", 1), ("b", 2)):  # b is newer, of another config
        res = subprocess.run(
            _cmd(store, tmp_path / "runs" / name, stages, f"seed={seed}"),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 1
    resumed = subprocess.run(
        _cmd(
            store,
            tmp_path / "runs" / "c",
            "stages=[stages_for_tests:ok,stages_for_tests:also_ok]",
            "seed=1",
            "resume=last",
        ),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = (tmp_path / "runs" / "c" / "tinyflow.log").read_text()
    assert f"resuming from {tmp_path / 'runs' / 'a'}" in log
    ctx = json.loads((tmp_path / "runs" / "c" / "context.json").read_text())
    assert ctx["metrics"]["ok_runs"] == 1  # `ok` finished in a and was not run again

    refused = subprocess.run(
        _cmd(store, tmp_path / "runs" / "d", stages, "seed=1", "device=stm32h7", f"resume={tmp_path / 'runs' / 'a'}"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 1
    message = plain(refused.stderr)
    assert "ran with another config" in message and "device.name: 'samd21' → 'stm32h743'" in message
    assert "Traceback" not in refused.stderr
