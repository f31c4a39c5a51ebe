"""Issue 24: every stage's child run logs the memory and accuracy of its network under one vocabulary
(`tinyflow.metrics_vocabulary`), the parent run tells the story (pipeline figure, deployed LoggedModel), the
experiment opens on its runs, and a log without a terminal shows whole paths."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from conftest import SMALL_PIPELINE
from tinyflow.metrics_vocabulary import (
    ACCURACY_NAMES,
    FLASH,
    NO_ACCURACY_TAG,
    SRAM_ARENA,
    SRAM_PEAK,
    coverage,
    covers,
    figures,
    headline,
    matches,
)
from tinyflow.pipeline_figure import FIGURE_FILE
from tinyflow.tracking import DEPLOYED_MODEL_NAME, EXPERIMENT_TAGS

#: what each stage's child run must carry: (metric names, tags) — prefixes where it measures several networks
EXPECTED = {
    "space": (["fitting.sram.peak_bytes.median", "fitting.sram.peak_bytes.max", "fitting.flash.bytes.median",
               "fitting.flash.bytes.max", "capacity.macs_mean"], [NO_ACCURACY_TAG]),
    "train": ([f"{who}.{n}" for who in ("largest", "smallest") for n in (SRAM_PEAK, FLASH, "accuracy.float")], []),
    "search": ([f"searched.{n}" for n in (SRAM_PEAK, SRAM_ARENA, FLASH, "accuracy.float")], []),
    "finetune": ([SRAM_PEAK, SRAM_ARENA, FLASH, "accuracy.float"], []),
    "quantize": ([SRAM_PEAK, SRAM_ARENA, FLASH, *ACCURACY_NAMES], []),
    "schedule": ([SRAM_PEAK, SRAM_ARENA, FLASH, *ACCURACY_NAMES], []),
    "deploy": ([SRAM_PEAK, SRAM_ARENA, FLASH, *ACCURACY_NAMES], ["memory.source", "accuracy.source"]),
}  # fmt: skip


def test_names_match_with_prefix_and_suffix_only_on_dots() -> None:
    assert matches("largest.flash.bytes", FLASH) and matches("fitting.flash.bytes.max", FLASH)
    assert matches(FLASH, FLASH) and not matches("flash_bytes", FLASH) and not matches("xflash.bytes", FLASH)
    assert covers(["searched.accuracy.float", "sram.arena_bytes"], ACCURACY_NAMES) == ["accuracy.float"]
    assert coverage(["fitting.sram.peak_bytes.max", "fitting.flash.bytes.max"], {NO_ACCURACY_TAG: "why"}) == {
        "memory": True,
        "accuracy": True,
    }
    assert coverage(["sram.peak_bytes"], {}) == {"memory": False, "accuracy": False}  # flash missing, no accuracy


def test_figures_and_headline() -> None:
    values = figures("largest", sram_peak=10, flash=20, accuracy_float=0.5) | figures("smallest", flash=1)
    assert values == {
        "largest.sram.peak_bytes": 10.0,
        "largest.flash.bytes": 20.0,
        "largest.accuracy.float": 0.5,
        "smallest.flash.bytes": 1.0,
    }
    head = headline(values, "largest")
    assert (head["sram"], head["flash"], head["accuracy"], head["accuracy_kind"]) == (10.0, 20.0, 0.5, "float")
    both = figures(sram_peak=5, sram_arena=6, accuracy_float=0.4, accuracy_int8=0.3)
    assert headline(both)["sram"] == 6.0 and headline(both)["accuracy_kind"] == "int8"  # the arena, the int8


def _stage_runs(client: MlflowClient, experiment_id: str) -> tuple[Any, dict[str, Any]]:
    runs = client.search_runs([experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parent, {r.data.tags["stage"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}


@pytest.mark.slow
def test_every_stage_logs_memory_and_accuracy_and_the_parent_tells_the_story(run_cli, tmp_path, store_uri) -> None:
    res = run_cli(*SMALL_PIPELINE)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    client = MlflowClient(tracking_uri=store_uri)
    exp = client.get_experiment_by_name("tinyflow")
    assert exp.tags.get("mlflow.experimentKind") == EXPERIMENT_TAGS["mlflow.experimentKind"]
    parent, stages = _stage_runs(client, exp.experiment_id)
    assert list(EXPECTED) == [s for s in EXPECTED if s in stages], sorted(stages)
    matrix = {}
    for name, (metrics, tags) in EXPECTED.items():
        run = stages[name]
        missing = [m for m in metrics if m not in run.data.metrics] + [t for t in tags if t not in run.data.tags]
        assert not missing, f"stage {name} lacks {missing}; it logged {sorted(run.data.metrics)}"
        matrix[name] = coverage(run.data.metrics, run.data.tags)
    assert all(all(c.values()) for c in matrix.values()), matrix
    assert "nothing is trained yet" in stages["space"].data.tags[NO_ACCURACY_TAG]
    for name in set(EXPECTED) - {"space"}:
        assert NO_ACCURACY_TAG not in stages[name].data.tags, name
    fitting = stages["space"].data.metrics
    assert fitting["fitting.sram.peak_bytes.median"] <= fitting["fitting.sram.peak_bytes.max"]
    assert stages["train"].data.metrics["largest.flash.bytes"] > stages["train"].data.metrics["smallest.flash.bytes"]
    schedule = stages["schedule"].data.metrics
    assert schedule[SRAM_ARENA] == parent.data.metrics["arena_bytes"]  # the plan the report shows
    assert schedule["accuracy.int8"] == parent.data.metrics["accuracy_int8"]

    # the parent: the pipeline figure and the deployed int8 model, linked, with its figures
    assert FIGURE_FILE in {a.path for a in client.list_artifacts(parent.info.run_id)}
    (output,) = parent.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.name == DEPLOYED_MODEL_NAME and model.source_run_id == parent.info.run_id
    assert model.experiment_id == exp.experiment_id
    linked = {m.key: m.value for m in model.metrics}
    for name in ("accuracy.int8", SRAM_ARENA, SRAM_PEAK, FLASH, "macs", "latency_ms"):
        assert name in linked, sorted(linked)
    assert linked["accuracy.int8"] == stages["deploy"].data.metrics["accuracy.int8"]
    assert {"device", "arch", "scheduler"} <= set(model.params)

    # no terminal: the report prints every path whole, on its own line
    run_dir = tmp_path / "run"
    lines = res.stderr.splitlines()
    assert f"output dir: {run_dir}" in lines, [line for line in lines if "output dir" in line]
    assert f"report: {run_dir / 'report.md'}" in lines
    assert "…" not in "\n".join(line for line in lines if str(run_dir) in line)
    assert (run_dir / FIGURE_FILE).stat().st_size > 10_000
    (link,) = [line for line in lines if line.startswith("MLflow UI: ")]
    assert f"runs/{parent.info.run_id}?workflowType=machine_learning" in link and store_uri in link
