"""Issue 16, stores and the machine: the MLflow store is created once under a lock, train-cache entries are checked
by digest, a resume re-runs a stage whose file changed, and a read-only or full disk reads as one paragraph naming
the path (items 4, 5, 6). Read-only and full file systems are real tmpfs mounts (skipped where `mount` is refused);
root ignores file modes, so chmod cannot make them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO, cli_env
from robustness_stages import plain
from tinyflow.contracts import TrainResult
from tinyflow.training.cache import TrainCache, train_cache


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs at tmp_path/fs (unmounted afterwards); skip where the machine refuses `mount`."""
    point = tmp_path / "fs"
    point.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(point)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode().strip()}); read-only / full disks untested")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _read_only(point: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)


def _fill(point: Path) -> None:
    with open(point / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tinyflow", *args],
        cwd=cwd,
        env={**cli_env(), "COLUMNS": "1000"},
        capture_output=True,
        text=True,
        timeout=300,
    )


# ---------------------------------------------------------------- item 4: two jobs on a new store
RACE = """
import sys, time
from pathlib import Path
from tinyflow.tracking import ensure_store
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
print(ensure_store(sys.argv[1], "tinyflow"))
"""


@pytest.mark.slow
def test_two_processes_create_a_new_store_once(tmp_path: Path) -> None:
    """Two processes racing on a new sqlite file failed with alembic's "Online migration expected to match one row"
    (labelled a tinyflow bug). Five new stores, two processes released at the same instant on each."""
    for i in range(5):
        uri = f"sqlite:///{tmp_path / f'store{i}.db'}"
        go = tmp_path / f"go{i}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACE, uri, str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        import time

        time.sleep(4)  # both have imported MLflow and wait for the go file
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
        assert outs[0][0].strip() == outs[1][0].strip()  # one experiment, the same id for both
        assert len(MlflowClient(tracking_uri=uri).search_experiments()) == 2  # Default + tinyflow


# ---------------------------------------------------------------- item 5: a damaged cache entry
def test_a_cache_entry_that_fails_its_digest_is_dropped_and_named(tmp_path: Path, caplog) -> None:
    ckpt = tmp_path / "run" / "supernet.ckpt"
    ckpt.parent.mkdir()
    torch.save({"w": torch.ones(3)}, ckpt)
    cache = TrainCache(tmp_path / "cache")
    result = TrainResult(kind="supernet", checkpoint=str(ckpt), metrics={"val_acc_largest": 0.5}, wall_time_s=1.0)
    entry = cache.store("k1", result, {"output_dir": "x"})
    assert json.loads((entry / "result.json").read_text())["checkpoint_sha256"]
    assert cache.lookup("k1", tmp_path / "a").cache_hit
    damaged = entry / "supernet.ckpt"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="tinyflow.training.cache"):
        assert cache.lookup("k1", tmp_path / "b") is None
    assert f"dropping entry {entry}" in caplog.text and "fails its digest" in caplog.text
    assert not entry.exists() and not (tmp_path / "b" / "supernet.ckpt").exists()
    assert cache.store("k1", result, {}) == entry and cache.lookup("k1", tmp_path / "c").cache_hit  # recomputed


@pytest.mark.slow
def test_a_resume_runs_again_the_stage_whose_file_changed(tmp_path: Path) -> None:
    """Resume skipped `train` whatever happened to its checkpoint, so a damaged file failed every later job."""
    common = [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"hydra.run.dir={tmp_path / 'run'}"]
    first = _cli("stages=[robustness:write_model,stages_for_tests:boom]", *common)
    assert first.returncode == 1
    (tmp_path / "run" / "model.pt").write_bytes(b"damaged")
    again = _cli("stages=[robustness:write_model,stages_for_tests:also_ok]", "resume=true", *common)
    assert again.returncode == 0, again.stderr[-2000:]
    ctx = json.loads((tmp_path / "run" / "context.json").read_text())
    assert ctx["metrics"]["written"] == 2  # written by the first job and again by the resume
    assert (
        "is missing or changed since it was written; running robustness:write_model again"
        in (tmp_path / "run" / "tinyflow.log").read_text()
    )


# ---------------------------------------------------------------- item 6: the machine fails the job
def test_a_read_only_cache_dir_turns_the_cache_off_with_one_line(tmpfs: Path, caplog) -> None:
    from omegaconf import OmegaConf

    _read_only(tmpfs)
    cfg = OmegaConf.create({"cache": {"train": True, "dir": str(tmpfs / "cache")}})
    with caplog.at_level(logging.WARNING, logger="tinyflow.training.cache"):
        assert train_cache(cfg) is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and str(tmpfs / "cache" / "train") in lines[0] and "cache is off" in lines[0]


def test_a_full_cache_dir_turns_the_cache_off(tmpfs: Path, caplog) -> None:
    from omegaconf import OmegaConf

    (tmpfs / "cache" / "train").mkdir(parents=True)
    _fill(tmpfs)
    cfg = OmegaConf.create({"cache": {"train": True, "dir": str(tmpfs / "cache")}})
    with caplog.at_level(logging.WARNING, logger="tinyflow.training.cache"):
        assert train_cache(cfg) is None
    assert "No space left" in caplog.text


@pytest.mark.slow
def test_a_read_only_run_folder_is_one_paragraph(tmpfs: Path, tmp_path: Path) -> None:
    _read_only(tmpfs)
    res = _cli(
        "stages=[stages_for_tests:ok]",
        f"hydra.run.dir={tmpfs / 'run'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert res.returncode == 1
    message = plain(res.stderr)
    assert f"{tmpfs / 'run'}: cannot be written" in message and "read-only" in message
    assert "Traceback" not in res.stderr and "bug" not in message


@pytest.mark.slow
def test_a_run_folder_under_a_file_is_one_paragraph(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    res = _cli(
        "stages=[stages_for_tests:ok]",
        f"hydra.run.dir={tmp_path / 'file' / 'run'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert res.returncode == 1
    assert "is a file, not a folder" in plain(res.stderr) and "Traceback" not in res.stderr


@pytest.mark.slow
def test_a_read_only_store_is_one_paragraph(tmpfs: Path, tmp_path: Path) -> None:
    """A read-only store printed ~100 lines of SQLAlchemy and "This looks like a bug in tinyflow"."""
    uri = f"sqlite:///{tmpfs / 'mlflow.db'}"
    made = _cli("stages=[stages_for_tests:ok]", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'one'}")
    assert made.returncode == 0, made.stderr[-2000:]
    _read_only(tmpfs)
    res = _cli("stages=[stages_for_tests:ok]", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'two'}")
    assert res.returncode == 1
    message = plain(res.stderr)
    assert str(tmpfs) in message and ("read-only" in message or "cannot be written" in message), message
    assert "bug in tinyflow" not in message and "Traceback" not in res.stderr and len(res.stderr.splitlines()) < 15


@pytest.mark.slow
def test_a_full_disk_names_the_file_it_could_not_write(tmpfs: Path, tmp_path: Path) -> None:
    """A stage writing into a run folder on a full disk: the paragraph names the file (it named no path)."""
    run = tmpfs / "run"
    res = _cli(
        "stages=[stages_for_tests:ok,robustness:fill]",
        f"hydra.run.dir={run}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert res.returncode == 1
    message = plain(res.stderr)
    assert f"{run / 'big.bin'}: no space left" in message and "Traceback" not in res.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    parents = [r for r in client.search_runs(["1"]) if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parents] == ["FAILED"] and "No space left" in parents[0].data.tags["error"]
