"""Backend `onnxruntime` and stage `deploy`: the ONNX-vs-PyTorch check passes and fails loudly, int8 accuracy,
host latency, and files/models logged to a real MLflow store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from mlflow.tracking import MlflowClient
from onnx import numpy_helper

from conftest import REPO, cli_env
from deploy_helpers import compose_cfg, finetuned_run, shared_store, tiny_arch
from tinyflow.context import RunContext
from tinyflow.deploy.latency import host_latency
from tinyflow.deploy.model import MissingStageError
from tinyflow.deploy.onnx_export import OnnxCheckError, check_onnx_against_torch, export_onnx
from tinyflow.deployment import Deployment
from tinyflow.plugins import build_plugin
from tinyflow.stages import get_stage
from tinyflow.tracking import MlflowTracker, NullTracker, activate


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory):
    cfg, ctx, model = finetuned_run(tmp_path_factory.mktemp("run"), "backend.latency_runs=20")
    ctx = get_stage("quantize")(cfg, ctx)
    return cfg, get_stage("schedule")(cfg, ctx), model


def _perturb_first_conv(src: str, dst: Path, delta: float) -> None:
    """Add `delta` to one weight of the first conv of an exported float ONNX file."""
    m = onnx.load(src)
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    init = next(t for t in m.graph.initializer if t.name == conv.input[1])
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += delta
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(m, dst)


def test_float_onnx_matches_pytorch(quantized) -> None:
    _, ctx, model = quantized
    arch = tiny_arch()
    figures = check_onnx_against_torch(model, ctx.onnx_path, (1, 1, arch.resolution, arch.resolution))
    assert figures["onnx_max_abs_diff"] <= 1e-4
    assert figures["onnx_check_inputs"] == 100


def test_perturbed_weight_fails_the_check_loudly(quantized, tmp_path: Path) -> None:
    _, ctx, model = quantized
    bad = tmp_path / "bad.onnx"
    _perturb_first_conv(ctx.onnx_path, bad, 0.05)
    arch = tiny_arch()
    with pytest.raises(OnnxCheckError, match=r"max abs [0-9.e-]+ over 100 inputs") as info:
        check_onnx_against_torch(model, bad, (1, 1, arch.resolution, arch.resolution))
    measured = float(str(info.value).split("max abs ")[1].split()[0])
    assert measured > 1e-4


def test_deploy_stage_fails_when_the_exported_file_was_changed(quantized, tmp_path: Path) -> None:
    cfg, ctx, _ = quantized
    bad = tmp_path / "model.onnx"
    _perturb_first_conv(ctx.onnx_path, bad, 0.05)
    tampered = RunContext(**{**ctx.__dict__, "output_dir": str(tmp_path), "onnx_path": str(bad)})
    with pytest.raises(OnnxCheckError, match="differs from the PyTorch model"):
        get_stage("deploy")(cfg, tampered)


@pytest.mark.slow
def test_deploy_stage_checks_measures_and_logs(quantized, tmp_path_factory: pytest.TempPathFactory) -> None:
    cfg, ctx, _ = quantized
    uri = shared_store(tmp_path_factory)
    tracker = MlflowTracker(uri=uri, experiment="deploy-test", log_config=False)
    run_ctx = RunContext(**{**ctx.__dict__, "metrics": dict(ctx.metrics), "artifacts": dict(ctx.artifacts)})
    with activate(tracker), tracker.job(cfg, {"run_name": "t"}), tracker.stage("deploy"):
        child = tracker.child_id
        run_ctx = get_stage("deploy")(cfg, run_ctx)
    m = run_ctx.metrics
    assert m["onnx_max_abs_diff"] <= 1e-4
    assert m["accuracy_int8_onnx"] == pytest.approx(ctx.metrics["accuracy_int8"])
    assert m["accuracy_float_onnx"] == pytest.approx(ctx.metrics["accuracy_float"], abs=1e-9)
    assert m["host_latency_float_ms"] > 0 and m["host_latency_int8_ms"] > 0
    assert run_ctx.extra["deploy_checks"]["onnx_matches_torch"] is True
    assert run_ctx.extra["backend"] == "onnxruntime"
    (section,) = run_ctx.extra["report_sections"]  # the backend's own report section, as a dict
    assert dict((r[0], r[1]) for r in section["rows"])["host latency (int8)"] == f"{m['host_latency_int8_ms']:.3f} ms"
    client = MlflowClient(tracking_uri=uri)
    logged = client.get_run(child).data.metrics
    assert logged["onnx_max_abs_diff"] == pytest.approx(m["onnx_max_abs_diff"])
    files = {a.path for a in client.list_artifacts(child, "deploy")}
    assert {"deploy/model.onnx", "deploy/model_int8.onnx", "deploy/deploy_checks.json"} <= files
    assert "deploy.png" in {a.path for a in client.list_artifacts(child)}
    models = client.search_logged_models(experiment_ids=[client.get_run(child).info.experiment_id])
    assert {lm.name for lm in models} >= {"model_int8", "model_float"}


def test_deploy_before_any_model_names_the_missing_stage(tmp_path: Path) -> None:
    cfg = compose_cfg()
    with pytest.raises(MissingStageError, match="'finetune'"):
        get_stage("deploy")(cfg, RunContext(output_dir=str(tmp_path)))


def test_deploy_without_quantize_names_quantize(quantized, tmp_path: Path) -> None:
    cfg, ctx, _ = quantized
    fresh = RunContext(output_dir=str(tmp_path), arch=ctx.arch, model_checkpoint=ctx.model_checkpoint)
    with pytest.raises(MissingStageError, match="'quantize'"):
        get_stage("deploy")(cfg, fresh)


def test_deploy_without_schedule_names_schedule(quantized, tmp_path: Path) -> None:
    """The backend deploys the Deployment `schedule` planned; without it the stage names that stage."""
    cfg, ctx, _ = quantized
    fresh = RunContext(
        output_dir=str(tmp_path),
        arch=ctx.arch,
        model_checkpoint=ctx.model_checkpoint,
        onnx_path=ctx.onnx_path,
        onnx_int8_path=ctx.onnx_int8_path,
    )
    with pytest.raises(MissingStageError, match="'schedule'"):
        get_stage("deploy")(cfg, fresh)


def test_backend_given_no_model_names_finetune(quantized, tmp_path: Path) -> None:
    cfg, ctx, _ = quantized
    backend = build_plugin(cfg, "backend")
    deployment = Deployment.load(ctx.artifacts["deployment"])
    with pytest.raises(MissingStageError, match="finetune"):
        backend.deploy(deployment, None, None, str(tmp_path), NullTracker(), {})


def test_host_latency_is_a_median_of_runs(quantized) -> None:
    _, ctx, _ = quantized
    lat = host_latency(ctx.onnx_int8_path, (1, 1, 16, 16), runs=15, warmup=2)
    assert len(lat["runs_ms"]) == 15
    assert lat["median_ms"] == pytest.approx(float(np.median(lat["runs_ms"])))
    assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"]


def test_export_is_byte_for_byte_reproducible(quantized, tmp_path: Path) -> None:
    _, ctx, model = quantized
    a = export_onnx(model, (1, 1, 16, 16), tmp_path / "a.onnx")
    assert a.read_bytes() == Path(ctx.onnx_path).read_bytes()


@pytest.mark.slow
def test_cli_deploy_first_is_one_clear_paragraph(tmp_path: Path) -> None:
    """`python -m tinyflow stages=[deploy]`: no model yet → an error paragraph naming the missing stage."""
    cmd = [sys.executable, "-m", "tinyflow", "stages=[deploy]", "tracking=none", f"hydra.run.dir={tmp_path}"]
    res = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    text = " ".join(res.stderr.replace("│", " ").split())  # the panel wraps lines
    assert "stage 'deploy' needs model_checkpoint from stage 'finetune'" in text
    assert "Traceback" not in res.stderr
