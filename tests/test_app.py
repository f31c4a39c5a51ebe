"""The `python -m tinyflow` app end to end: runs, errors, resume, multirun — read back from a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient


def _runs(store_uri: str) -> list:
    client = MlflowClient(tracking_uri=store_uri)
    exp = client.get_experiment_by_name("tinyflow")
    return client.search_runs([exp.experiment_id], max_results=100)


def _parents_and_children(store_uri: str) -> tuple[list, list]:
    runs = [r for r in _runs(store_uri) if r.data.tags.get("kind") != "sweep_summary"]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_run_logs_parent_and_children(run_cli, store_uri, tmp_path: Path) -> None:
    res = run_cli("device=stm32h7", "stages=[stages_for_tests:ok,stages_for_tests:also_ok]")
    assert res.returncode == 0, res.stderr
    parents, children = _parents_and_children(store_uri)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["device"] == "stm32h7"
    assert parent.data.tags["job_num"] == "0"
    assert parent.data.tags["git_commit"]
    assert parent.data.params["device.sram_kb"] == "512.0"
    assert parent.data.params["device.name"] == "stm32h743"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" and "wall_time_s" in c.data.metrics for c in children)
    ok_child = next(c for c in children if c.data.tags["stage"] == "stages_for_tests:ok")
    assert ok_child.data.metrics["answer"] == 42.0
    artifacts = [a.path for a in MlflowClient(tracking_uri=store_uri).list_artifacts(parent.info.run_id)]
    assert "config.yaml" in artifacts
    context = json.loads((tmp_path / "run" / "context.json").read_text())
    assert context["completed"] == ["stages_for_tests:ok", "stages_for_tests:also_ok"]
    assert (tmp_path / "run" / "tinyflow.log").exists()


def test_unknown_device_names_group_value_and_options(run_cli) -> None:
    res = run_cli("device=nosuch", "stages=[stages_for_tests:ok]")
    assert res.returncode != 0
    err = res.stderr
    assert "device" in err and "nosuch" in err and "stm32f746" in err and "stm32h743" in err
    assert "Traceback" not in err


def test_negative_sram_names_the_field(run_cli, store_uri) -> None:
    res = run_cli("device=custom", "device.sram_kb=-5", "device.flash_kb=1024", "stages=[stages_for_tests:ok]")
    assert res.returncode != 0
    assert "device.sram_kb" in res.stderr and "-5" in res.stderr
    assert "Traceback" not in res.stderr
    parents, _ = _parents_and_children(store_uri)
    assert parents[0].info.status == "FAILED"
    assert "device.sram_kb" in parents[0].data.tags["error"]


def test_unknown_core_is_refused(run_cli) -> None:
    res = run_cli("device.core=pentium", "stages=[stages_for_tests:ok]")
    assert res.returncode != 0
    assert "device.core" in res.stderr and "cortex_m7" in res.stderr
    assert "Traceback" not in res.stderr


def test_failing_stage_marks_child_and_parent_failed(run_cli, store_uri) -> None:
    res = run_cli("stages=[stages_for_tests:ok,stages_for_tests:boom]")
    assert res.returncode == 1
    assert "boom: an unexpected failure inside a stage" in res.stderr
    assert "Traceback" not in res.stderr
    parents, children = _parents_and_children(store_uri)
    assert parents[0].info.status == "FAILED"
    failed = next(c for c in children if c.data.tags["stage"] == "stages_for_tests:boom")
    assert failed.info.status == "FAILED"
    assert "boom" in failed.data.tags["error"]
    assert "error.txt" in [a.path for a in MlflowClient(tracking_uri=store_uri).list_artifacts(failed.info.run_id)]


def test_user_error_is_one_paragraph(run_cli) -> None:
    res = run_cli("stages=[stages_for_tests:missing_data]")
    assert res.returncode == 1
    assert "data.root" in res.stderr and "Traceback" not in res.stderr


def test_unknown_stage_lists_available(run_cli) -> None:
    res = run_cli("stages=[nosuchstage]")
    assert res.returncode == 1
    assert "unknown stage 'nosuchstage'" in res.stderr


def test_resume_skips_finished_stages(run_cli, tmp_path: Path) -> None:
    first = run_cli("stages=[stages_for_tests:ok,stages_for_tests:boom]")
    assert first.returncode == 1
    ctx = json.loads((tmp_path / "run" / "context.json").read_text())
    assert ctx["completed"] == ["stages_for_tests:ok"]
    second = run_cli("stages=[stages_for_tests:ok,stages_for_tests:also_ok]", "resume=true")
    assert second.returncode == 0, second.stderr
    ctx = json.loads((tmp_path / "run" / "context.json").read_text())
    assert ctx["completed"] == ["stages_for_tests:ok", "stages_for_tests:also_ok"]
    assert ctx["metrics"]["ok_runs"] == 1  # `ok` did not run again
    assert "already finished" in second.stderr


@pytest.mark.slow
def test_parallel_multirun_logs_into_one_store(run_cli, store_uri, tmp_path: Path) -> None:
    res = run_cli(
        "device=stm32f412,stm32h743",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "stages=[stages_for_tests:ok]",
        multirun=True,
    )
    assert res.returncode == 0, res.stderr
    assert "database is locked" not in res.stderr
    parents, children = _parents_and_children(store_uri)
    assert sorted(p.data.tags["device"] for p in parents) == ["stm32f412", "stm32h743"]
    assert sorted(p.data.tags["job_num"] for p in parents) == ["0", "1"]
    assert all(p.info.status == "FINISHED" for p in parents)
    assert len(children) == 2
    for job in ("0", "1"):
        assert (tmp_path / "multirun" / job / "context.json").exists()


@pytest.mark.slow
def test_default_pipeline_runs_end_to_end(run_cli, store_uri, tmp_path: Path) -> None:
    res = run_cli("device=stm32h7", "debug=fast")
    assert res.returncode == 0, res.stderr[-3000:]
    parents, children = _parents_and_children(store_uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    stages = ["space", "train", "search", "finetune", "quantize", "schedule", "deploy"]
    assert sorted(c.data.tags["stage"] for c in children) == sorted(stages)
    assert all(c.info.status == "FINISHED" for c in children)
    ctx = json.loads((tmp_path / "run" / "context.json").read_text())
    assert ctx["completed"] == stages
    assert ctx["arch"] and ctx["onnx_int8_path"] and (tmp_path / "run" / "report.md").exists()
