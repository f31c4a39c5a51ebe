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

MODEL = Path(__file__).resolve().parent / "data" / "models" / "ad01_int8.onnx"
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
            recorded = [("tracking=recording", f"tracking.path={c}") for c in calls]
            procs = [_start("tinyflow.analyze", *ANALYZE_MODEL, *r) for r in recorded]
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


# ---------------------------------------------------------------- item 4: an unreachable or broken tracking store
def test_check_store_refuses_a_closed_port_at_once() -> None:
    from tinyflow.errors import EnvironmentProblem
    from tinyflow.tracking import check_store

    uri = f"http://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    with pytest.raises(EnvironmentProblem, match="cannot be reached") as caught:
        check_store(uri)
    assert time.monotonic() - start < 5
    assert uri in str(caught.value) and "Connection refused" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body", "refused"),
    [
        (404, b'{"error_code": "RESOURCE_DOES_NOT_EXIST"}', False),  # MLflow: no such experiment yet
        (200, b'{"experiment": {}}', False),
        (401, b"", False),  # credentials are MLflow's business
        (404, b"<html>not here</html>", True),  # something else answers on that port
        (502, b"bad gateway", True),  # MLflow retries a 5xx for minutes
    ],
)
def test_check_store_asks_the_server_what_mlflow_asks_first(status: int, body: bytes, refused: bool) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from tinyflow.errors import EnvironmentProblem
    from tinyflow.tracking import check_store

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None: ...

    server = HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_port}"
    try:
        if refused:
            with pytest.raises(EnvironmentProblem, match=f"answers HTTP {status}"):
                check_store(uri)
        else:
            check_store(uri)
    finally:
        server.shutdown()
        server.server_close()


def test_check_store_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    from tinyflow.errors import EnvironmentProblem
    from tinyflow.tracking import check_store

    (tmp_path / "empty.db").write_bytes(b"")
    check_store(f"sqlite:///{tmp_path / 'empty.db'}")  # an empty or missing file becomes a new store
    check_store(f"sqlite:///{tmp_path / 'missing.db'}")
    (tmp_path / "notes.db").write_text("not a database\n" * 100)
    with pytest.raises(EnvironmentProblem, match="is not an SQLite database"):
        check_store(f"sqlite:///{tmp_path / 'notes.db'}")


def _one_paragraph(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 1, res.stderr[-3000:]
    message = plain(res.stderr)
    assert "Traceback" not in res.stderr and "bug in tinyflow" not in message, res.stderr[-3000:]
    assert res.stderr.count("tinyflow: error") == 1
    return message


@pytest.mark.slow
def test_analyze_with_an_unreachable_tracking_server_fails_in_seconds(tmp_path: Path) -> None:
    """It took 495 s (MLflow's retries, a callback warning, retries again, then a bug paragraph)."""
    uri = f"http://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    res = _run("tinyflow.analyze", *ANALYZE_MODEL, f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'run'}")
    assert time.monotonic() - start < 30
    message = _one_paragraph(res)
    assert uri in message and "cannot be reached" in message and "marked FAILED" in message


@pytest.mark.slow
def test_the_pipeline_with_a_store_that_is_not_a_database_is_one_paragraph(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"\x00garbage" * 512)
    res = _run(
        "tinyflow", "stages=[stages_for_tests:ok]", f"tracking.uri=sqlite:///{store}", f"hydra.run.dir={tmp_path}/r"
    )
    message = _one_paragraph(res)
    assert str(store) in message and "not an SQLite database" in message
    assert store.read_bytes() == b"\x00garbage" * 512  # left as it was


# ---------------------------------------------------------------- item 6: NaN and infinity
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 10**400])
def test_a_number_that_is_not_finite_is_named(value: float) -> None:
    from tinyflow.errors import ConfigError
    from tinyflow.validation import check_finite, non_finite_problem, refuse_non_finite

    assert "finetune.lr" in (non_finite_problem("finetune.lr", value) or "")
    with pytest.raises(ConfigError, match=r"finetune\.lr"):
        check_finite("finetune.lr", value)
    with pytest.raises(ConfigError, match=r"space\.widths\[1\]"):
        refuse_non_finite({"space": {"widths": [0.5, value]}, "seed": 0})


def test_finite_numbers_and_other_values_pass() -> None:
    from omegaconf import OmegaConf

    from tinyflow.validation import non_finite_problem, refuse_non_finite

    for value in (0, -3, 1.5, 1e300, True, "nan", None, [1]):
        assert non_finite_problem("x", value) is None
    refuse_non_finite(OmegaConf.create({"a": {"b": 1.0, "c": [1, 2]}, "d": "???", "e": "${a.b}"}))


@pytest.mark.parametrize("override", ["device.sram_kb=nan", "device.sram_kb=inf", "network.width_mult=nan"])
def test_analyze_refuses_nan_and_infinity_in_one_paragraph(override: str, tmp_path: Path) -> None:
    res = _run("tinyflow.analyze", override, "tracking=none", f"hydra.run.dir={tmp_path / 'run'}")
    message = _one_paragraph(res)
    assert override.split("=")[0] in message and "finite" in message


@pytest.mark.slow
def test_the_pipeline_refuses_a_nan_learning_rate_and_fails_its_run(tmp_path: Path) -> None:
    """`finetune.lr=nan` used to pass validation and fail at quantize with "scale issue"."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = _run(
        "tinyflow",
        "stages=[stages_for_tests:ok]",
        "finetune.lr=nan",
        f"tracking.uri={uri}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    message = _one_paragraph(res)
    assert "finetune.lr = nan" in message and "finite" in message
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tinyflow").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"] and "finetune.lr" in runs[0].data.tags["error"]


# ---------------------------------------------------------------- item 7: an unusable run folder for the other apps
@pytest.mark.parametrize("module", ["tinyflow.analyze", "tinyflow.firmware"])
@pytest.mark.parametrize("tracking", ["tracking=none", "tracking=mlflow"])
def test_the_apps_report_an_unusable_run_folder_in_one_paragraph(module: str, tracking: str, tmp_path: Path) -> None:
    """They printed Hydra's traceback from its own `mkdir`; the pipeline had a paragraph."""
    (tmp_path / "file").write_text("not a folder")
    run = tmp_path / "file" / "run"
    store = f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"
    extra = [store] if tracking == "tracking=mlflow" else []
    res = _run(module, "network=onnx", f"network.path={MODEL}", tracking, *extra, f"hydra.run.dir={run}")
    message = _one_paragraph(res)
    assert str(tmp_path / "file") in message and "is a file, not a folder" in message
