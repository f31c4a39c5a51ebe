"""`python -m tinyflow.analyze` (real Hydra, real MLflow sqlite store) and the pipeline's `schedule` stage."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import tinyflow
from conftest import REPO, cli_env
from tinyflow.arch import mobilenetv2
from tinyflow.context import RunContext
from tinyflow.errors import ConfigError

REQUIRED = {"peak_live_bytes", "arena_bytes", "flash_bytes", "macs", "params", "peak_layer", "per_layer"}
PATCH = {"n_patches", "patch_blocks", "input_patch_hw", "patch_stage_macs", "patch_stage_macs_layerwise"}


def analyze_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The analyze app without tracking (fast: no MLflow store), outputs in tmp_path/run."""
    cmd = [sys.executable, "-m", "tinyflow.analyze", *args, "tracking=none", f"hydra.run.dir={tmp_path / 'run'}"]
    return subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)


def _mlflow_run(store_uri: str, app: str = "analyze"):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri)
    exp = client.get_experiment_by_name("tinyflow")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'analyze'")
    assert len(runs) == 1
    return client, runs[0]


@pytest.mark.slow
def test_analyze_cli_json_patch(run_cli, tmp_path: Path, store_uri: str) -> None:  # type: ignore[no-untyped-def]
    fixed = ("scheduler.n_patches=4", "scheduler.patch_blocks=5")  # MCUNetV2's grid; fits the H743's 512 KB
    res = run_cli("scheduler=patch", *fixed, "output=json", "device=stm32h743", module="tinyflow.analyze")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)  # stdout holds only the JSON
    assert set(data) >= REQUIRED | PATCH
    assert data["input_patch_hw"] == [75, 75] and data["n_patches"] == 4 and data["patch_blocks"] == 5
    assert data["layer_peak_live_bytes"] == 1_404_928
    assert data["layer_peak_live_bytes"] >= 4 * data["peak_live_bytes"]  # MCUNetV2: 4-8x lower peak
    assert 0 < data["extra_macs_ratio"] <= 0.15
    assert data["arena_bytes"] >= data["peak_live_bytes"]
    on_disk = json.loads((tmp_path / "run" / "analysis.json").read_text())
    assert on_disk["peak_live_bytes"] == data["peak_live_bytes"]
    client, run = _mlflow_run(store_uri)
    assert run.data.metrics["peak_live_bytes"] == data["peak_live_bytes"]
    assert run.data.metrics["layer_peak_live_bytes"] == 1_404_928
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"memory_profile.png", "analysis.json"} <= artifacts


def test_analyze_cli_table_width_and_resolution(tmp_path: Path) -> None:
    res = analyze_cli(tmp_path, "network.width_mult=0.35", "network.resolution=144", "memory.inplace_depthwise=false")
    assert res.returncode == 0, res.stderr
    assert "summary" in res.stdout and "blocks.1.expand" in res.stdout and "peak_live" in res.stdout
    assert "does NOT fit" not in res.stdout.split("device SRAM")[1].splitlines()[0]


@pytest.mark.slow
def test_analyze_cli_onnx_and_bad_file(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from tinyflow.nn.static import StaticNet

    arch = mobilenetv2(0.35, 96, num_classes=10)
    path = tmp_path / "m.onnx"
    torch.onnx.export(StaticNet(arch).eval(), torch.randn(1, 3, 96, 96), str(path), dynamo=False)
    res = analyze_cli(tmp_path, "network=onnx", f"network.path={path}", "output=json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    from tinyflow.contracts import MemoryConfig
    from tinyflow.cost import arch_cost

    assert data["peak_live_bytes"] == arch_cost(arch, MemoryConfig()).peak_live_bytes
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    bad = analyze_cli(tmp_path, "network=onnx", f"network.path={junk}")
    assert bad.returncode == 1
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", bad.stderr).split())  # the error panel wraps lines
    assert "is not an ONNX model" in text and "Traceback" not in text


def _cfg(*overrides: str):  # type: ignore[no-untyped-def]
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_schedule_stage_on_arch_and_onnx(tmp_path: Path) -> None:
    from tinyflow.stages.schedule import run

    arch = mobilenetv2(0.35, 64, num_classes=10)
    ctx = RunContext(output_dir=str(tmp_path), arch=arch.to_dict())
    ctx = run(_cfg("scheduler=layer", "tracking=none"), ctx)
    assert ctx.plan["source"] == "network description"  # no exported file: the network's own IR
    assert ctx.plan["deployed_network"]["kind"] == "static"
    from tinyflow.contracts import MemoryConfig
    from tinyflow.cost import arch_cost

    assert ctx.plan["peak_live_bytes"] == arch_cost(arch, MemoryConfig()).peak_live_bytes
    plan_file = json.loads(Path(ctx.artifacts["plan"]).read_text())
    assert plan_file["peak_live_bytes"] == ctx.plan["peak_live_bytes"]
    assert all(t["offset"] >= 0 for t in plan_file["tensors"])
    # searched patch options are applied to the patch scheduler
    ctx.schedule_options = {"n_patches": 2, "patch_blocks": 3}
    # (40 KB: the 2x2 plan's arena + the firmware's overhead on the M0+ is over the SAMD21's 32 KB)
    ctx = run(_cfg("scheduler=patch", "tracking=none", "device.sram_kb=40"), ctx)
    assert (ctx.plan["n_patches"], ctx.plan["patch_blocks"]) == (2, 3)
    assert ctx.plan["applied_schedule_options"] == {"n_patches": 2, "patch_blocks": 3}


def test_schedule_stage_without_model(tmp_path: Path) -> None:
    from tinyflow.deploy.model import MissingStageError
    from tinyflow.stages.schedule import run

    with pytest.raises(MissingStageError, match="needs arch from stage 'search'"):
        run(_cfg("tracking=none"), RunContext(output_dir=str(tmp_path)))


def test_mcunet_network_from_arch_json(tmp_path: Path) -> None:
    from tinyflow.analyze.networks import mcunet

    a = mcunet(width_mult=0.5, resolution=96, seed=3)
    path = tmp_path / "arch.json"
    path.write_text(a.to_json())
    assert mcunet(arch=str(path)) == a
    ctx_file = tmp_path / "context.json"
    ctx_file.write_text(json.dumps({"arch": a.to_dict()}))
    assert mcunet(arch=str(ctx_file)) == a
    with pytest.raises(ConfigError, match=r"network.depths"):
        mcunet(depths=[9, 9, 9, 9, 9])
    assert mcunet().genome["kernels"] == [7] * 20  # no genome, no seed: the largest arch


@pytest.mark.slow
def test_schedule_stage_in_the_pipeline(run_cli, tmp_path: Path, store_uri: str) -> None:  # type: ignore[no-untyped-def]
    """`python -m tinyflow stages=[schedule]` resuming a run whose context holds a searched arch."""
    prev = tmp_path / "prev"
    RunContext(output_dir=str(prev), arch=mobilenetv2(0.35, 96, num_classes=10).to_dict()).save()
    res = run_cli("stages=[schedule]", f"resume={prev}", "scheduler=patch", "scheduler.n_patches=2")
    assert res.returncode == 0, res.stderr
    ctx = RunContext.load(tmp_path / "run")
    assert ctx.plan["scheduler"] == "patch" and ctx.plan["n_patches"] == 2
    assert ctx.plan["source"] == "network description"
    assert Path(ctx.artifacts["plan"]).is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri)
    exp = client.get_experiment_by_name("tinyflow")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'schedule'")
    assert run.data.metrics["peak_live_bytes"] == ctx.plan["peak_live_bytes"]
    assert "memory_profile.png" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_deployed_graph_falls_back_to_the_description_on_an_unsupported_op(tmp_path: Path) -> None:
    """An int8 file the importer cannot read (an op it lacks) is planned from the network's description, and the
    source names the op; any other import error is raised."""
    import onnx
    from onnx import TensorProto, helper

    from tinyflow.ir.onnx_import import OnnxImportError
    from tinyflow.network import DeployedNetwork
    from tinyflow.stages.schedule import deployed_graph

    net = DeployedNetwork.plain(mobilenetv2(0.35, 64, num_classes=10))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    node = helper.make_node("Einsum", ["x"], ["y"], equation="nchw->nchw")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    graph, source = deployed_graph(net, str(path))
    assert source.startswith("network description") and "Einsum" in source
    assert graph.macs() == net.graph().macs()
    assert deployed_graph(net, None)[1] == "network description"
    (tmp_path / "bad.onnx").write_text("not onnx")
    with pytest.raises(OnnxImportError, match="is not an ONNX model"):
        deployed_graph(net, str(tmp_path / "bad.onnx"))
