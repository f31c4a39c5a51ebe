"""The run report: rich table + report.md/json in the output dir + metrics/tags on the MLflow parent run, for
whatever stages ran."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, cli_env
from deploy_helpers import compose_cfg, finetuned_run, shared_store, tiny_arch
from tinyflow.context import RunContext
from tinyflow.pipeline_figure import FIGURE_FILE
from tinyflow.report import DASH, REPORT_JSON, REPORT_MD, write_report
from tinyflow.stages import get_stage
from tinyflow.tracking import MlflowTracker, activate


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory):
    cfg, ctx, _ = finetuned_run(tmp_path_factory.mktemp("run"))
    ctx = get_stage("quantize")(cfg, ctx)
    ctx = get_stage("schedule")(cfg, ctx)
    ctx.completed += ["quantize", "schedule"]
    return cfg, ctx


def _row(markdown: str, label: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_with_no_stages_shows_dashes(tmp_path: Path) -> None:
    md = write_report(compose_cfg(), RunContext(output_dir=str(tmp_path)))
    assert (tmp_path / REPORT_MD).read_text() == md
    for label in ("accuracy (float)", "accuracy (int8)", "peak SRAM (live)", "flash", "MACs", "fits"):
        assert _row(md, label)[1] == DASH, label
    assert _row(md, "device")[1] == "samd21"
    assert json.loads((tmp_path / REPORT_JSON).read_text())["fits"] is None


def test_report_after_quantize_and_schedule_has_the_deployed_figures(quantized) -> None:
    cfg, ctx = quantized
    md = write_report(cfg, ctx)
    m, plan = ctx.metrics, ctx.plan
    assert _row(md, "accuracy (float)")[1] == f"{100 * m['accuracy_float']:.2f} %"
    assert _row(md, "accuracy (int8)")[1] == f"{100 * m['accuracy_int8']:.2f} %"
    n = int(m["test_images"])  # each accuracy with its 95 % interval over the test images (issue 26)
    assert _row(md, "accuracy (int8)")[2].endswith(f"Wilson, n = {n:,}")
    assert m["accuracy_int8_ci95_low"] <= m["accuracy_int8"] <= m["accuracy_int8_ci95_high"]
    drop = _row(md, "int8 drop (float − int8)")
    assert ("cannot be told apart" in drop[2]) == (
        m["accuracy_drop_int8_ci95_low"] <= 0.0 <= m["accuracy_drop_int8_ci95_high"]
    )
    assert _row(md, "flash")[1] == f"{plan['flash_bytes'] / 1024:,.1f} KiB"
    assert plan["flash_bytes"] == m["onnx_flash_bytes"]  # the int8 file's own count
    assert _row(md, "peak SRAM (live)")[1] == f"{plan['peak_live_bytes'] / 1024:,.1f} KiB"
    assert "int8 ONNX" in _row(md, "scheduler")[2]
    assert _row(md, "fits")[1] == "yes"  # a few KiB on the default 32 KB / 256 KB board
    assert _row(md, "file: onnx (int8)")[1] == ctx.onnx_int8_path
    summary = json.loads((Path(ctx.output_dir) / REPORT_JSON).read_text())
    assert summary["flash_bytes"] == plan["flash_bytes"] and summary["fits"] is True
    assert summary["test_images"] == n and summary["accuracy_float_ci95_high"] == m["accuracy_float_ci95_high"]
    assert summary["accuracy_drop_int8_told_apart"] in (True, False)
    assert summary["latency_ms"] == plan["latency_ms"] is not None  # the default cost model (micronets)


def test_report_says_no_when_the_device_is_too_small(quantized, tmp_path: Path) -> None:
    _, ctx = quantized
    # 2 kB SRAM, 16 kB flash: the tiny net's ~3.5 KiB arena and ~28 KiB of weights do not fit
    cfg = compose_cfg("device=custom", "device.sram_kb=2", "device.flash_kb=16")
    small = RunContext(**{**ctx.__dict__, "output_dir": str(tmp_path)})
    md = write_report(cfg, small)
    assert ctx.plan["arena_bytes"] > 2 * 1024 and ctx.plan["flash_bytes"] > 16 * 1024
    assert _row(md, "fits SRAM")[1] == "NO" and _row(md, "fits flash")[1] == "NO" and _row(md, "fits")[1] == "NO"


def test_report_reads_the_schedule_stage_only(tmp_path: Path) -> None:
    """After search alone the memory and cost rows are dashes (no stage planned); `schedule` on the searched arch
    plans its network's description, and the report shows that analysis."""
    arch = tiny_arch()
    ctx = RunContext(output_dir=str(tmp_path), arch=arch.to_dict(), completed=["space", "train", "search"])
    md = write_report(compose_cfg(), ctx)
    assert _row(md, "MACs")[1] == _row(md, "peak SRAM (live)")[1] == _row(md, "flash")[1] == DASH
    from tinyflow.cost import model_flash_bytes
    from tinyflow.ir import from_arch

    ctx = get_stage("schedule")(compose_cfg("cost_model=analytic"), ctx)
    md = write_report(compose_cfg(), ctx)
    graph = from_arch(arch)
    assert _row(md, "MACs")[1] == f"{graph.macs() / 1e6:,.2f} M"
    assert "network description" in _row(md, "scheduler")[2]
    assert _row(md, "accuracy (int8)")[1] == DASH
    assert _row(md, "est. latency")[1] == DASH  # the analytic cost model gives no latency
    summary = json.loads((tmp_path / REPORT_JSON).read_text())
    assert summary["macs"] == graph.macs() and summary["flash_bytes"] == model_flash_bytes(graph)


@pytest.mark.slow
def test_report_goes_to_the_mlflow_parent_run(quantized, tmp_path_factory: pytest.TempPathFactory) -> None:
    cfg, ctx = quantized
    uri = shared_store(tmp_path_factory)
    tracker = MlflowTracker(uri=uri, experiment="report-test", log_config=False)
    with activate(tracker), tracker.job(cfg, {"run_name": "report"}):
        parent = tracker.parent_id
        write_report(cfg, ctx)
    run = MlflowClient(tracking_uri=uri).get_run(parent)
    assert run.data.metrics["accuracy_int8"] == pytest.approx(ctx.metrics["accuracy_int8"])
    assert run.data.metrics["flash_bytes"] == ctx.plan["flash_bytes"]
    assert run.data.metrics["fits"] == 1.0
    assert run.data.tags["fits"] == "yes" and run.data.tags["memory_source"] == "int8 ONNX"
    artifacts = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(parent)}
    assert {REPORT_MD, REPORT_JSON, FIGURE_FILE} <= artifacts  # the stages' memory and accuracy, as one figure


def test_paths_are_printed_whole_without_a_terminal(monkeypatch, tmp_path: Path) -> None:
    """Piped into a file (no terminal, 80 columns or fewer), every file's path is on its own line, whole."""
    import io

    from rich.console import Console

    import tinyflow.console

    out = io.StringIO()
    monkeypatch.setattr(tinyflow.console, "console", Console(file=out, width=40, force_terminal=False))
    deep = tmp_path / ("a-very-long-folder-name-" * 4) / "runs" / "2026-12-06_21-58-05_12345-abcdef"
    deep.mkdir(parents=True)
    write_report(compose_cfg(), RunContext(output_dir=str(deep)))
    lines = out.getvalue().splitlines()
    assert f"output dir: {deep}" in lines and f"report: {deep / REPORT_MD}" in lines
    assert "…" not in out.getvalue()


def test_pipeline_figure_draws_the_stages_and_the_budgets() -> None:
    import matplotlib.pyplot as plt

    from tinyflow.metrics_vocabulary import figures, headline
    from tinyflow.pipeline_figure import TITLE, pipeline_figure

    stages = {
        "space": {**headline(figures("fitting", "median", sram_peak=9000, flash=90000), "fitting", "median"),
                  "no_accuracy": "nothing trained"},
        "finetune": headline(figures(sram_peak=10000, flash=100000, accuracy_float=0.9)),
        "schedule": headline(figures(sram_arena=12000, flash=100000, accuracy_float=0.9, accuracy_int8=0.88)),
    }  # fmt: skip
    fig = pipeline_figure(stages, sram_budget=16384, flash_budget=131072)
    sram, flash, acc = fig.axes
    assert fig._suptitle.get_text() == TITLE
    assert [t.get_text() for t in sram.get_xticklabels()] == list(stages)
    assert list(sram.lines[0].get_ydata()) == pytest.approx([9000 / 1024, 10000 / 1024, 12000 / 1024])
    assert sram.lines[1].get_ydata()[0] == 16  # the budget, in KiB
    assert flash.lines[1].get_ydata()[0] == 128
    assert list(acc.lines[0].get_ydata()) == pytest.approx([90.0, 88.0])  # space has none; schedule's int8
    assert any(t.get_text() == "no accuracy" for t in acc.texts)
    plt.close(fig)


# metrics that measure the host, not the model: they differ from run to run by nature
_TIMING = ("wall_time", "per_s", "host_latency", "seconds")


def _reproducible(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not any(t in k for t in _TIMING)}


@pytest.mark.slow
def test_same_command_same_seed_same_arch_and_numbers(tmp_path: Path) -> None:
    """The full pipeline on the debug=fast budget, twice with seed 0 (in parallel, separate MLflow stores): the same
    arch and the same numbers."""
    stages = "stages=[space,train,search,finetune,quantize,schedule,deploy]"
    procs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        cmd = [sys.executable, "-m", "tinyflow", stages, "debug=fast", "seed=0", f"hydra.run.dir={out}"]
        cmd += ["cache.train=false", "cache.search=false"]  # both must train and measure: determinism is the point
        cmd.append(f"tracking.uri=sqlite:///{tmp_path / f'mlflow{i}.db'}")
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    contexts, reports = [], []
    for i, proc in enumerate(procs):
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err.decode()[-4000:]
        out = tmp_path / f"run{i}"
        contexts.append(json.loads((out / "context.json").read_text()))
        reports.append(json.loads((out / REPORT_JSON).read_text()))
    first, second = contexts
    assert first["completed"] == ["space", "train", "search", "finetune", "quantize", "schedule", "deploy"]
    assert first["arch"] == second["arch"]
    assert first["schedule_options"] == second["schedule_options"]
    assert _reproducible(first["metrics"]) == _reproducible(second["metrics"])
    for key in ("accuracy_float", "accuracy_int8", "peak_sram_bytes", "arena_bytes", "flash_bytes", "macs"):
        assert reports[0][key] is not None and reports[0][key] == reports[1][key], key


def test_report_renders_any_backend_section(tmp_path: Path) -> None:
    """The report renders the sections the deploy stage kept, as they are, without knowing the backend; the
    backend's metrics and details go to report.json under their names."""
    from tinyflow.contracts import ReportSection

    section = ReportSection("on the board", [("latency", "3.2 ms", "measured"), ("runs", "10")], ["A note."])
    ctx = RunContext(output_dir=str(tmp_path), metrics={"board_latency_ms": 3.2})
    ctx.extra.update(
        backend="anything",
        report_sections=[section.to_dict()],
        backend_metrics=["board_latency_ms"],
        backend_details=["board"],
        board={"runs": 10},
    )
    md = write_report(compose_cfg(), ctx)
    assert "## on the board" in md and "| latency | 3.2 ms | measured |" in md and "| runs | 10 |  |" in md
    assert "A note." in md
    summary = json.loads((tmp_path / REPORT_JSON).read_text())
    assert summary["board"] == {"runs": 10} and summary["board_latency_ms"] == 3.2
    assert summary["sections"] == [section.to_dict()] and summary["backend"] == "anything"
