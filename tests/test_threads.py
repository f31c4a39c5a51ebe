"""Share the machine (tinyflow.threads): each job's torch threads = usable cores // tinyflow jobs running at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tinyflow import threads
from tinyflow.errors import ConfigError
from tinyflow.threads import ENV_SWEEP_OMP, JobThreads, Launcher, Registry, decide, launcher_of

REPO = Path(__file__).resolve().parents[1]
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
RAY = "hydra_plugins.tinyflow_ray_launcher.launcher.RayLauncher"


@pytest.fixture
def sleeper():
    """A live process that is not this one (a second registered job)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------- the arithmetic
def test_two_live_jobs_share_two_cores(tmp_path, sleeper):
    reg = Registry(tmp_path)
    assert reg.register() and reg.register(sleeper)
    assert reg.live() == sorted([os.getpid(), sleeper])
    share = decide(None, 2, len(reg.live()), Launcher(), {})
    assert (share.threads, share.jobs) == (1, 2)
    assert share.line() == "threads: 1 of 2 cores (2 tinyflow jobs running)"
    assert decide(None, 2, 1, Launcher(), {}).line() == "threads: 2 of 2 cores (1 tinyflow job running)"
    assert decide(None, 8, 3, Launcher(), {}).threads == 2  # rounded down: never more than the share
    assert decide(None, 2, 5, Launcher(), {}).threads == 1  # at least one


def test_a_dead_or_reused_pid_is_ignored_and_removed(tmp_path, sleeper):
    reg = Registry(tmp_path)
    reg.register()
    dead = _dead_pid()
    reg.register(dead)
    (tmp_path / str(sleeper)).write_text("1\n")  # a live pid, but another process's start time: a reused pid
    (tmp_path / ".123.tmp").write_text("")  # a registration cut short: not an entry
    assert reg.live() == [os.getpid()]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([str(os.getpid()), ".123.tmp"])
    reg.unregister()
    assert reg.live() == []


def test_an_unwritable_registry_counts_this_job_alone(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    reg = Registry(blocker / "jobs")
    assert reg.register() is False and reg.live() == []
    job = JobThreads(registry=reg, env={})
    assert job.decide().jobs == 1


def test_explicit_settings_win():
    omp = decide(None, 2, 1, Launcher(), {"OMP_NUM_THREADS": "1"})
    assert omp.line() == "threads: 1 of 2 cores (OMP_NUM_THREADS=1)"
    share = decide(None, 2, 4, Launcher(), {"OMP_NUM_THREADS": "2"})
    assert share.threads == 2 and share.explicit  # the user's setting, whatever the registry says
    capped = decide(None, 2, 1, Launcher(), {"OMP_NUM_THREADS": "16"})
    assert capped.threads == 2 and "capped at the 2 usable cores" in capped.line()
    config = decide(1, 4, 1, Launcher(), {"OMP_NUM_THREADS": "3"})  # the config's `threads` wins over the variable
    assert config.line() == "threads: 1 of 4 cores (threads=1 in the config)"
    assert decide(None, 2, 2, Launcher(), {"OMP_NUM_THREADS": "abc"}).threads == 1  # not a count: auto
    assert threads.parse_setting("auto") is None and threads.parse_setting(None) is None
    assert threads.parse_setting(3) == 3
    for bad in (0, -1, "many", 1.5, True):
        with pytest.raises(ConfigError, match="threads"):
            threads.parse_setting(bad)


def test_a_launchers_omp_is_not_the_users():
    """In a sweep's worker OMP_NUM_THREADS may be joblib's or Ray's; the sweep recorded whether the user set it."""
    loky = {"OMP_NUM_THREADS": "1", ENV_SWEEP_OMP: ""}
    share = decide(None, 4, 3, Launcher(), loky)
    assert not share.explicit and share.threads == 1 and share.jobs == 3
    user = {"OMP_NUM_THREADS": "1", ENV_SWEEP_OMP: "2"}
    assert decide(None, 4, 3, Launcher(), user).threads == 2


def test_joblib_n_jobs_from_the_config():
    node = OmegaConf.create({"_target_": JOBLIB, "n_jobs": 2, "backend": None})
    launcher = launcher_of(node, cores=2)
    assert launcher == Launcher("joblib", jobs=2)
    share = decide(None, 2, 1, launcher, {})  # the sibling worker has not registered yet: still 2 at once
    assert share.threads == 1
    assert share.line() == "threads: 1 of 2 cores (2 tinyflow jobs running; joblib runs 2 at once)"
    assert decide(None, 4, 3, launcher, {}).threads == 1  # a third tinyflow job beside the sweep's two
    assert launcher_of(OmegaConf.create({"_target_": JOBLIB, "n_jobs": -1}), cores=4).jobs == 4
    assert launcher_of(OmegaConf.create({"_target_": JOBLIB, "n_jobs": -2}), cores=4).jobs == 3
    ray = launcher_of(OmegaConf.create({"_target_": RAY, "cpus_per_job": 1.0}), cores=4)
    assert decide(None, 4, 1, ray, {}).threads == 1
    basic = launcher_of(OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}), 4)
    assert basic == Launcher()


def test_cgroup_quota_caps_the_cores(tmp_path):
    v2 = tmp_path / "v2"
    (v2 / "user.slice" / "job").mkdir(parents=True)
    (v2 / "cpu.max").write_text("max 100000\n")
    (v2 / "user.slice" / "cpu.max").write_text("150000 100000\n")
    (v2 / "user.slice" / "job" / "cpu.max").write_text("max 100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/user.slice/job\n")
    assert threads.cgroup_cpu_limit(v2, proc) == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("2:cpu,cpuacct:/\n")
    assert threads.cgroup_cpu_limit(v1, proc) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert threads.cgroup_cpu_limit(v1, proc) == 3.0
    assert 1 <= threads.usable_cores() <= (os.cpu_count() or 1)


# ---------------------------------------------------------------- one job
def test_a_job_gives_threads_back_when_a_second_starts(tmp_path, sleeper, monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    reg = Registry(tmp_path)
    before = torch.get_num_threads()
    with JobThreads(registry=reg, env={}) as job:
        assert job.start().threads == 2 and torch.get_num_threads() == 2
        reg.register(sleeper)  # a second job starts
        assert job.check(force=False).threads == 2  # throttled: not looked at yet
        job._last -= threads.CHECK_EVERY_S
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        opt.step()  # a training step looks again
        assert job.share.threads == 1 and torch.get_num_threads() == 1
        reg.unregister(sleeper)
        assert job.check().threads == 2 and torch.get_num_threads() == 2
        assert reg.live() == [os.getpid()]
    assert reg.live() == [] and torch.get_num_threads() == before
    opt.step()  # the hook is gone with the job


def test_a_forked_worker_never_re_evaluates_the_jobs_share(tmp_path, sleeper, monkeypatch):
    """The search's forked workers (tinyflow.forked) train the predictor's MLPs: their optimizer steps must not
    re-check the job's share (they would count themselves as a second job, log from a forked process — where a lock
    held by another of the parent's threads deadlocks them — and write to the parent's tracker)."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    reg = Registry(tmp_path)
    with JobThreads(registry=reg, env={}) as job:
        job.start()
        reg.register(sleeper)  # a second job: the parent itself would drop to one thread
        job._last -= threads.CHECK_EVERY_S
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: an optimizer step, then report the share it sees and its torch threads
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
            opt.step()
            os.write(write, f"{job.share.threads} {torch.get_num_threads()}".encode())
            os._exit(0)
        os.close(write)
        reported = os.read(read, 64).decode()
        os.waitpid(pid, 0)
        assert reported == "2 2"
        assert job.check().threads == 1  # the job itself does see the second job


def test_an_explicit_job_is_not_re_evaluated(tmp_path, sleeper, monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    reg = Registry(tmp_path)
    with JobThreads(setting=2, registry=reg, env={}) as job:
        reg.register(sleeper)
        assert job.start().line() == "threads: 2 of 2 cores (threads=2 in the config)"
        assert job.check().threads == 2 and torch.get_num_threads() == 2


# ---------------------------------------------------------------- real processes
CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tinyflow.threads import Registry

    reg = Registry(sys.argv[1])
    reg.register()  # removed at exit (atexit)
    deadline = time.monotonic() + 60
    while len(reg.live()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    print(len(reg.live()), flush=True)
    while not Path(sys.argv[2]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    """
)


def test_two_processes_see_each_other(tmp_path):
    root, done = tmp_path / "jobs", tmp_path / "done"
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(done)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        seen = [p.stdout.readline().strip() for p in procs]
    finally:
        done.touch()
        for p in procs:
            p.wait(timeout=60)
    assert seen == ["2", "2"]
    assert Registry(root).live() == [] and not any(root.iterdir())  # both removed themselves at exit


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS") and k != ENV_SWEEP_OMP}
    env[threads.ENV_JOBS_DIR] = str(tmp_path / "jobs")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


@pytest.mark.slow
def test_a_job_prints_and_logs_its_share(tmp_path):
    calls = tmp_path / "calls.json"
    cmd = [sys.executable, "-m", "tinyflow", "stages=[stages_for_tests:ok]", "tracking=recording"]
    cmd += [f"tracking.path={calls}", f"hydra.run.dir={tmp_path / 'run'}", f"cache.dir={tmp_path / 'cache'}"]
    out = subprocess.run(cmd, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    cores = threads.usable_cores()
    line = f"threads: {cores} of {cores} core{'s' * (cores != 1)} (1 tinyflow job running)"
    assert line in out.stdout + out.stderr
    recorded = json.loads(calls.read_text())
    assert ["log_params", [{"threads_used": cores}]] in recorded
    assert not any((tmp_path / "jobs").iterdir())


@pytest.mark.slow
def test_a_joblib_sweep_prints_the_share_it_chose(tmp_path):
    cmd = [sys.executable, "-m", "tinyflow", "-m", "stages=[stages_for_tests:ok]", "tracking=none", "seed=0,1"]
    cmd += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    cmd += [f"cache.dir={tmp_path / 'cache'}"]
    out = subprocess.run(cmd, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    cores = threads.usable_cores()
    share = f"{max(1, cores // 2)} of {cores} core{'s' * (cores != 1)} (2 tinyflow jobs running; joblib runs 2 at once)"
    assert f"sweep: threads per job: {share}" in out.stdout + out.stderr
    for job in ("0", "1"):  # joblib's OMP_NUM_THREADS in its workers is not taken for the user's
        text = (tmp_path / "multirun" / job / "tinyflow.log").read_text()
        assert f"threads: {share}" in text, text
