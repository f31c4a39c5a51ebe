"""`benchmarks/bench_joint.py` over seeds: the mean ± sd summary, the "matches layer-only's best accuracy at <x>x less
SRAM" line, and a real two-seed run at a tiny budget whose report, JSON and MLflow figure are checked."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, cli_env

spec = importlib.util.spec_from_file_location("bench_joint", REPO / "benchmarks" / "bench_joint.py")
bench_joint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_joint)


def rows(cells: dict[tuple[str, int], float]) -> dict[tuple[str, int], dict]:
    return {k: {"int8": v, "arena_kib": float(k[1]), "resolution": 48} for k, v in cells.items()}


def test_seed_stats_mean_sd_and_missing_cells():
    a = rows({("layer", 8): 0.70, ("layer", 32): 0.86, ("patch", 8): 0.80})
    b = rows({("layer", 8): 0.74, ("layer", 32): 0.88, ("patch", 8): 0.84})
    b[("patch", 32)] = {"error": "RuntimeError: nothing fits"}  # a failed cell counts for no seed
    stats = bench_joint.seed_stats([a, b], [8, 32], ["layer", "patch"])
    assert stats[("layer", 8)]["mean"] == pytest.approx(0.72) and stats[("layer", 8)]["n"] == 2
    assert stats[("layer", 8)]["sd"] == pytest.approx(0.028284, abs=1e-6)
    assert ("patch", 32) not in stats
    table = bench_joint.summary_table(stats, [8, 32], ["layer", "patch"])
    assert "| 8 kB | 72.0 ± 2.8 % (n = 2; r48/r48; 8.0 KiB) | 82.0 ± 2.8 % (n = 2;" in table
    assert table.splitlines()[-1].endswith("| — |")


def test_match_line_smallest_budget_within_a_point_of_layer_best():
    budgets = [8, 16, 32, 64]
    means = {("layer", 8): 0.70, ("layer", 16): 0.80, ("layer", 32): 0.86, ("layer", 64): 0.86}
    means |= {("patch", 8): 0.845, ("patch", 16): 0.852, ("patch", 32): 0.86, ("patch", 64): 0.86}
    stats = {k: {"mean": v} for k, v in means.items()}
    # layer's best (86 %) first at 32 kB; patch within 1 point first at 16 kB (85.2 %; 84.5 % at 8 kB is not)
    assert bench_joint.match_line(stats, budgets) == "joint patch matches layer-only's best accuracy at 2.0x less SRAM"
    stats[("patch", 16)]["mean"] = stats[("patch", 32)]["mean"] = stats[("patch", 64)]["mean"] = 0.80
    assert bench_joint.match_line(stats, budgets).startswith("joint patch does not match layer-only's best accuracy")
    assert "no budget" in bench_joint.match_line({k: v for k, v in stats.items() if k[0] == "layer"}, budgets)


@pytest.mark.slow
def test_two_seeds_tiny_run_reports_summary_last_line_and_mlflow_figure(tmp_path):
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    out = tmp_path / "bj"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "bench_joint.py"),
        *("--seeds", "0,1", "--budgets", "24,32", "--epochs", "4", "--evaluations", "4", "--finetune-epochs", "1"),
        *("--methods", "layer,patch", "--out", str(out), "--tracking", "mlflow", "--tracking-uri", uri),
        "debug=fast",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("joint patch ") and "layer-only's best accuracy" in lines[-1]
    assert "int8 test accuracy over seeds [0, 1] (mean ± sd):" in proc.stdout
    result = json.loads((out / "bench_joint_seeds.json").read_text())
    assert result["seeds"] == [0, 1] and len(result["per_seed"]) == 2 and result["last_line"] == lines[-1]
    assert {k: v["n"] for k, v in result["summary"].items()} == {
        f"{m}@{b}": 2 for m in ("layer", "patch") for b in (24, 32)
    }
    assert (out / "seed0" / "accuracy_vs_sram.png").is_file() and (out / "accuracy_vs_sram_seeds.png").is_file()
    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments, "tags.kind = 'bench_joint'")
    runs = client.search_runs(experiments)  # the fresh store holds this benchmark's job and stage runs alone
    artifacts = {a.path for r in runs for a in client.list_artifacts(r.info.run_id)}
    assert {"accuracy_vs_sram_seeds.png", "seed1_accuracy_vs_sram.png", "bench_joint.md"} <= artifacts
    # seeds measured earlier are read back (--reuse): the same summary and last line, nothing retrained
    cmd = [c for c in cmd if c not in ("--tracking", "mlflow", "--tracking-uri", uri)] + ["--reuse"]
    again = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip().splitlines()[-1] == lines[-1] and "read back from" in again.stdout
