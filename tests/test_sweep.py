"""A real multirun over device SRAM × flash (stage `space` only) ends with the sweep summary: table, heatmaps,
an MLflow run; `python -m tinyflow.sweep_summary` redraws it from the directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, cli_env
from tinyflow.sweep import collect


@pytest.mark.slow
def test_multirun_summary(run_cli, tmp_path, store_uri):
    res = run_cli(
        "stages=[space]", "debug=fast", "device=custom", "device.sram_kb=2,64", "device.flash_kb=1024", multirun=True
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    root = tmp_path / "multirun"
    rows = json.loads((root / "sweep_summary.json").read_text())
    assert len(rows) == 2
    by = {(r["sram_kb"], r["flash_kb"]): r for r in rows}
    big, small = by[(64, 1024)], by[(2, 1024)]
    assert big["status"] == "ok" and big["width_mult"] is not None
    assert small["status"] != "ok" and small["width_mult"] is None  # 2 kB SRAM: nothing fits
    assert (root / "sweep_summary.png").stat().st_size > 0
    md = (root / "sweep_summary.md").read_text()
    assert "| job | sram_kb | flash_kb | width_mult | resolution |" in md
    client = MlflowClient(tracking_uri=store_uri)
    exp = client.get_experiment_by_name("tinyflow")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'sweep_summary'")
    assert len(runs) == 1
    assert runs[0].data.metrics["jobs"] == 2.0
    arts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"sweep_summary.md", "sweep_summary.png", "sweep_summary.json"} <= arts

    # by hand, files only
    (root / "sweep_summary.json").unlink()
    out = subprocess.run(
        [sys.executable, "-m", "tinyflow.sweep_summary", str(root), "--no-mlflow"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads((root / "sweep_summary.json").read_text()) == rows


def test_summary_of_a_non_sweep_dir_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "tinyflow.sweep_summary", str(tmp_path), "--no-mlflow"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "holds no Hydra jobs" in out.stderr


def _job(root, num: int, sram_kb: int, flash_kb: int, report: dict | None) -> None:
    from omegaconf import OmegaConf

    from tinyflow.context import RunContext

    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create({"device": {"name": "custom", "sram_kb": sram_kb, "flash_kb": flash_kb}}),
        job / ".hydra" / "config.yaml",
    )
    RunContext(output_dir=str(job), completed=["space", "deploy"], width_mult=0.35, resolution=28).save()
    if report is not None:
        (job / "report.json").write_text(json.dumps(report))


def test_a_full_pipeline_sweep_tabulates_and_maps_what_was_deployed(tmp_path):
    from tinyflow.sweep import grids, table_markdown

    deployed = {
        "accuracy_float": 0.97,
        "accuracy_int8": 0.965,
        "arena_bytes": 14336,
        "peak_sram_bytes": 13000,
        "flash_bytes": 237032,
        "macs": 3.2e6,
        "latency_ms": 4.5,
        "fits": True,
    }
    _job(tmp_path, 0, 64, 512, deployed)
    _job(tmp_path, 1, 128, 512, {**deployed, "arena_bytes": None, "fits": False})
    _job(tmp_path, 2, 256, 512, None)  # a job that failed before its report
    rows = {r["sram_kb"]: r for r in collect(tmp_path)}
    assert rows[64]["acc_int8_%"] == 96.5 and rows[64]["sram_used_kb"] == 14.0 and rows[64]["fits"] is True
    assert rows[128]["sram_used_kb"] == round(13000 / 1024, 2)  # no arena: the live peak
    assert "acc_int8_%" not in rows[256]
    assert rows[256]["status"] == "failed: no reason in its tinyflow.log"
    (tmp_path / "2" / "tinyflow.log").write_text("[x][tinyflow][ERROR] - failed: scheduler.n_patches = 4: too fine\n")
    rows = {r["sram_kb"]: r for r in collect(tmp_path)}
    assert rows[256]["status"] == "failed: scheduler.n_patches = 4: too fine"  # the reason, not a guess
    md = table_markdown(list(rows.values()))
    assert "acc_int8_%" in md.splitlines()[0] and "flash_used_kb" in md.splitlines()[0]
    _, _, g = grids(list(rows.values()))
    assert g["int8 accuracy (%)"][0, 0] == 96.5 and g["SRAM used (kB)"][0, 0] == 14.0
    assert str(g["int8 accuracy (%)"][0, 2]) == "nan"


def test_the_grid_table_figure_and_trends_of_a_binding_sweep(tmp_path):
    """Resolution follows SRAM and width follows flash: the grid table, the trend checks and the figure show it."""
    from tinyflow.context import RunContext
    from tinyflow.sweep import grid_markdown, grids, summarize, trends

    chosen = {(32, 128): (0.25, 40), (32, 256): (0.35, 40), (64, 128): (0.25, 56), (64, 256): (0.35, 56)}
    for num, ((sram, flash), (w, r)) in enumerate(chosen.items()):
        _job(tmp_path, num, sram, flash, {"accuracy_int8": 0.8 + r / 1000, "arena_bytes": r * 500, "fits": True})
        ctx = RunContext.load(tmp_path / str(num))
        ctx.width_mult, ctx.resolution = w, r
        ctx.save()
    _job(tmp_path, 9, 16, 128, None)
    ctx = RunContext.load(tmp_path / "9")
    ctx.width_mult = ctx.resolution = None  # nothing fits
    ctx.save()
    rows = collect(tmp_path)
    assert trends(rows) == {"distinct_choices": 4, "resolution_follows_sram": True, "width_follows_flash": True}
    md = grid_markdown(rows)
    assert md.splitlines()[0] == "| SRAM \\ flash | 128 kB | 256 kB |"
    assert "| 16 kB | nothing fits | — |" in md
    assert "| 64 kB | w0.25 r56: 85.6 %, 27 kB SRAM | w0.35 r56: 85.6 %, 27 kB SRAM |" in md
    backwards = [{**r, "resolution": 40} if r["sram_kb"] == 64 and r["flash_kb"] == 128 else r for r in rows]
    backwards = [{**r, "resolution": 48} if r["sram_kb"] == 32 and r["flash_kb"] == 128 else r for r in backwards]
    assert trends(backwards)["resolution_follows_sram"] is False

    _, _, g = grids(rows)
    assert {"width", "resolution", "int8 accuracy (%)", "SRAM used (kB)"} <= set(g)
    out = summarize(tmp_path, tracking={"_target_": "tinyflow.tracking.NullTracker"}, print_table=False)
    assert out["trends"]["distinct_choices"] == 4 and out["mlflow_run_id"] is None
    text = (tmp_path / "sweep_summary.md").read_text()
    assert "| SRAM \\ flash |" in text and "resolution non-decreasing in SRAM at every flash: yes" in text
    assert (tmp_path / "sweep_summary.png").stat().st_size > 10_000


def test_a_job_without_a_space_stage_is_not_called_nothing_fits(tmp_path):
    """A finished job that chose no (width, resolution) — it ran no space or search stage — shows what it deployed;
    a failed one shows `failed`, even when an earlier stage had chosen an arch."""
    from tinyflow.context import RunContext
    from tinyflow.sweep import grid_markdown

    _job(tmp_path, 0, 64, 128, {"accuracy_int8": 0.9, "arena_bytes": 20480, "fits": True})
    ctx = RunContext.load(tmp_path / "0")
    ctx.width_mult = ctx.resolution = None
    ctx.save()
    _job(tmp_path, 1, 32, 128, None)
    (tmp_path / "1" / "tinyflow.log").write_text("[x][tinyflow][ERROR] - failed: the stage ran out of disk\n")
    md = grid_markdown(collect(tmp_path))
    assert "| 64 kB | ok: 90.0 %, 20 kB SRAM |" in md, md
    assert "| 32 kB | failed |" in md, md


@pytest.mark.slow
def test_a_multirun_with_a_failed_job_exits_1_but_nothing_fits_does_not(run_cli, tmp_path):
    """Issue 25: a multirun whose jobs failed exited 0. Job 2's device is invalid (a failure); job 0's 2 kB SRAM fits
    nothing (not a failure); job 1 finishes."""
    res = run_cli(
        "stages=[space]", "debug=fast", "device=custom", "device.sram_kb=2,64,-1", "device.flash_kb=1024", multirun=True
    )
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    text = " ".join(res.stderr.split())
    assert "1 job(s) of the multirun" in text and "job 2: device.sram_kb = -1" in text, text[-3000:]
    assert "sweep.fail_on_error=false" in text and "Traceback" not in res.stderr
    root = tmp_path / "multirun"
    assert (root / "sweep_summary.json").exists()  # the summary is written before the exit
    assert json.loads((root / "0" / "job_failed.json").read_text())["nothing_fits"] is True


@pytest.mark.slow
def test_the_switch_keeps_a_failed_multirun_at_exit_0(run_cli, tmp_path):
    res = run_cli("stages=[stages_for_tests:ok]", "debug=fast", "seed=0,-1", "sweep.fail_on_error=false", multirun=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "multirun" / "1" / "job_failed.json").exists()


def test_failed_jobs_reads_the_markers(tmp_path):
    from tinyflow.sweep import failed_jobs

    for job, record in {
        "0": {"nothing_fits": True, "error": "no fit"},
        "1": {"nothing_fits": False, "error": "x"},
    }.items():
        (tmp_path / job).mkdir()
        (tmp_path / job / "job_failed.json").write_text(json.dumps(record))
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "job_failed.json").write_text("{broken")
    failed = failed_jobs(tmp_path)
    assert set(failed) == {"1", "2"} and failed["1"] == "x" and "unreadable" in failed["2"]


def test_budgets_print_as_given(tmp_path, capsys):
    """12.5 kB SRAM and 1024.5 kB flash stay 12.5 and 1024.5 in the grid, the table and the console."""
    from tinyflow.sweep import _print, grid_markdown, table_markdown

    _job(tmp_path, 0, 12.5, 1024, {"accuracy_int8": 0.9, "arena_bytes": 10240, "fits": True})
    _job(tmp_path, 1, 64, 1024.5, {"accuracy_int8": 0.9, "arena_bytes": 20480, "fits": True})
    rows = collect(tmp_path)
    grid = grid_markdown(rows)
    assert grid.splitlines()[0] == "| SRAM \\ flash | 1024 kB | 1024.5 kB |"
    assert "| 12.5 kB | w0.35 r28: 90.0 %, 10 kB SRAM | — |" in grid
    table = table_markdown(rows)
    assert "| 0 | 12.5 | 1024 |" in table and "| 1 | 64 | 1024.5 |" in table
    _print(rows)
    printed = capsys.readouterr().out
    assert "12.5" in printed and "1024.5" in printed and "e+03" not in printed


def test_accuracies_carry_their_intervals_and_indistinguishable_neighbours_are_noted(tmp_path):
    """Issue 26: each accuracy column with its 95 % interval; neighbouring budgets whose int8 accuracies cannot be
    told apart on their test sets are said to be so."""
    from tinyflow.sweep import summarize, table_markdown

    base = {"accuracy_float": 0.90, "arena_bytes": 8000, "fits": True, "test_images": 500}
    _job(tmp_path, 0, 16, 256, {**base, "accuracy_int8": 0.848})
    _job(tmp_path, 1, 32, 256, {**base, "accuracy_int8": 0.838})  # 1 point on 500 images: noise
    _job(tmp_path, 2, 64, 256, {**base, "accuracy_int8": 0.950})  # 11 points: real
    rows = {r["sram_kb"]: r for r in collect(tmp_path)}
    assert rows[16]["acc_int8_ci95_%"] == "81.4–87.7" and rows[16]["test_images"] == 500
    header = table_markdown(list(rows.values())).splitlines()[0]
    assert "| acc_int8_% | acc_int8_ci95_% |" in header and "| acc_float_% | acc_float_ci95_% |" in header
    summarize(tmp_path, tracking={"_target_": "tinyflow.tracking.NullTracker"}, print_table=False)
    text = (tmp_path / "sweep_summary.md").read_text()
    assert "- SRAM 16 → 32 kB at flash 256 kB: int8 84.8 % → 83.8 %" in text and "cannot be told apart" in text
    assert "SRAM 32 → 64 kB" not in text
