"""Issue 25: hostile or careless inputs end in one paragraph, fast, and never share or break another run's folder.

Run folders unique per process (item 3), an unreachable or broken tracking store (item 4), NaN / infinity in the
config (item 6), an unusable run folder for the analyze and firmware apps and a multirun's exit code (item 7).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, cli_env
from robustness_stages import plain

MODEL = Path("/work/shared/models/ad01_int8.onnx")
ANALYZE_MODEL = (f"network.path={MODEL}", "network=onnx", "output=json", "plot=false", "compare_layer=false")


def _start(module: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**cli_env(), "COLUMNS": "1000"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**cli_env(), "COLUMNS": "1000"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def closed_port() -> int:
    """A local TCP port nobody listens on: bound, read, closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- item 3: run folders of jobs started together
@pytest.mark.parametrize("module", ["tinyflow.analyze", "tinyflow.firmware"])
def test_the_apps_name_their_run_folder_per_process(module: str) -> None:
    """Two processes resolving the app's `hydra.run.dir` in the same second get two folders."""
    procs = [_start(module, "--cfg", "hydra", "--resolve") for _ in range(2)]
    dirs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        run = out.split("\n  run:\n", 1)[1].splitlines()[0]
        dirs.append(run.split("dir: ", 1)[1].strip())
    assert dirs[0] != dirs[1], dirs


@pytest.mark.slow
def test_two_analyze_jobs_started_together_get_their_own_folders(tmp_path: Path) -> None:
    """Three rounds of two `tinyflow.analyze` jobs started together: six folders, each with its analysis.json."""
    made: list[Path] = []
    try:
        for round_ in range(3):
            calls = [tmp_path / f"calls_{round_}_{i}.json" for i in range(2)]
            procs = [_start("tinyflow.analyze", *ANALYZE_MODEL, "tracking=recording", f"tracking.path={c}") for c in calls]
            for proc in procs:
                _, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, err[-2000:]
            dirs = [Path(_job_tags(c)["output_dir"]) for c in calls]
            made += dirs
            assert dirs[0] != dirs[1]
            assert all((d / "analysis.json").is_file() for d in dirs)
    finally:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)


def _job_tags(calls: Path) -> dict[str, str]:
    for method, args in json.loads(calls.read_text()):
        if method == "job":
            return dict(args[0])
    raise AssertionError(f"no job() call in {calls}")
