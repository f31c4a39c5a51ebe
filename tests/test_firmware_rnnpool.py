"""RNNPool plans as firmware (docs/design.md §15): the stem conv and RNNPool run patch by patch as the rnnpool plan
lays them out, RNNPool in float32 on the FPU, the rest int8; built through the real quantize / schedule / deploy
stages (backend=c) on a small RNNPool network trained on the digits, run on qemu: the arena is the plan's, every
output equals the NumPy oracle's bit for bit, top-1 against onnxruntime; the errors a user can hit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, cli_env
from deploy_helpers import compose_cfg, fit_adam, tiny_arch
from tinyflow.context import RunContext
from tinyflow.deployment import Deployment
from tinyflow.device import Device
from tinyflow.firmware import build
from tinyflow.firmware.oracle import run_oracle
from tinyflow.firmware.project import FirmwareSettings, make_firmware
from tinyflow.firmware.qmodel import FirmwareError, UnsupportedLayerError, build_qmodel
from tinyflow.firmware.rnnpool_float import exp_f32, sigmoid_f32, tanh_f32
from tinyflow.firmware.rnnpool_model import required_graph
from tinyflow.ir.onnx_constants import attach_onnx_constants
from tinyflow.ir.rnnpool import rnnpool_graph
from tinyflow.memory.config import MemoryConfig
from tinyflow.stages import get_stage
from tinyflow.tracking import NullTracker, activate

F746 = Device("stm32f746", 320, 1024, "cortex_m7", 216)
OPTIONS = {"patch": 4, "stride": 2, "hidden1": 4, "hidden2": 4}
IMAGES = 100  # test images through backend=c (the digits test split has 179)
needs_toolchain = pytest.mark.skipif(bool(build.missing_tools()), reason="arm-none-eabi-gcc / qemu not installed")


def _train_rnnpool(cfg, cell: str, epochs: int = 6):
    """A small RNNPoolNet (seeded) trained a little on the digits: the network `finetune` would leave."""
    from tinyflow.nn.rnnpool_net import RNNPoolNet
    from tinyflow.plugins import build_plugin

    torch.manual_seed(0)
    torch.set_num_threads(1)
    arch = tiny_arch()
    net = RNNPoolNet.from_arch(arch, {**OPTIONS, "cell": cell})
    data = build_plugin(cfg, "data")
    data.set_resolution(arch.resolution)
    data.setup("fit")
    return arch, fit_adam(net, data, epochs)


@pytest.fixture(scope="module")
def rnnpool_run(tmp_path_factory):
    """The real quantize and schedule stages (scheduler=rnnpool) on a fine-tuned RNNPool network's model.pt."""
    from tinyflow.training.checkpoint import save_static_model

    out = tmp_path_factory.mktemp("fw_rnnpool")
    overrides = [f"scheduler.{k}={v}" for k, v in OPTIONS.items()]
    cfg = compose_cfg("backend=c", "device=stm32f746", "scheduler=rnnpool", f"backend.images={IMAGES}", *overrides)
    arch, net = _train_rnnpool(cfg, "fastgrnn")
    ckpt = save_static_model(out / "model.pt", net, arch)
    ctx = RunContext(output_dir=str(out), arch=arch.to_dict(), model_checkpoint=str(ckpt))
    ctx.completed += ["space", "train", "search", "finetune"]
    with activate(NullTracker()):
        ctx = get_stage("quantize")(cfg, ctx)
        ctx = get_stage("schedule")(cfg, ctx)
    return cfg, ctx, net


def _description(net, path):
    """The network's description graph carrying the int8 file's constants (what the schedule stage deploys)."""
    graph = rnnpool_graph(net.rnnpool_arch)
    attach_onnx_constants(graph, path)
    return graph


def _test_images(cfg, n: int, labels: bool = False):
    from tinyflow.deploy.quantize import collect_images
    from tinyflow.plugins import build_plugin

    data = build_plugin(cfg, "data")
    data.set_resolution(tiny_arch().resolution)
    data.setup("test")
    x, y = collect_images(data.test_dataloader(), n)
    return (x, y) if labels else x


def test_float_functions_are_accurate():
    """The oracle's (and the C's) exp, sigmoid and tanh, made of float32 +, −, ×, ÷ only, against NumPy's."""
    x = np.linspace(-20, 20, 4001, dtype=np.float32)
    assert np.max(np.abs(exp_f32(x) / np.exp(x.astype(np.float64)) - 1)) < 5e-7
    assert np.max(np.abs(sigmoid_f32(x) - 1 / (1 + np.exp(-x.astype(np.float64))))) < 3e-7
    assert np.max(np.abs(tanh_f32(x) - np.tanh(x.astype(np.float64)))) < 6e-7


def test_plan_is_the_rnnpool_description_and_oracle_agrees(rnnpool_run):
    """schedule planned the network's description (the importer does not read RNNPool's ops); the firmware's model
    is that IR over the int8 file's constants; the oracle's RNNPool output is the float network's within a few
    int8 steps (stem and RNN weights are int8 in the file) and its top-1 equals onnxruntime's on most images."""
    from tinyflow.deploy.onnx_export import run_onnx, session

    cfg, ctx, net = rnnpool_run
    assert ctx.plan["scheduler"] == "rnnpool" and ctx.plan["source"].startswith("network description")
    model = build_qmodel(_description(net, ctx.onnx_int8_path))
    kinds = [layer.kind for layer in model.layers]
    assert kinds[:2] == ["conv", "rnnpool"] and kinds[-1] == "linear"
    x, y = _test_images(cfg, 200, labels=True)
    values = run_oracle(model, model.quantize_input(x), keep=True)
    pool = model.layers[1]
    with torch.no_grad():
        ref = net.rnnpool(net.stem(torch.from_numpy(x))).numpy().transpose(0, 2, 3, 1)
    ours = (values["rnnpool"].astype(np.float32) - pool.p["zp_out"]) * pool.p["scale_out"]
    assert np.max(np.abs(ours - ref)) / pool.p["scale_out"] < 8
    logits = model.dequantize_output(values[model.output_name].reshape(len(x), -1))
    theirs = run_onnx(session(ctx.onnx_int8_path), x)
    agree = float(np.mean(logits.argmax(1) == theirs.argmax(1)))
    with torch.no_grad():
        float_logits = net(torch.from_numpy(x)).numpy()
    acc = {k: float(np.mean(v.argmax(1) == y)) for k, v in (("float", float_logits), ("ort", theirs), ("fw", logits))}
    print(f"oracle vs onnxruntime top-1 on {len(x)} test images: {agree:.3f}; accuracy {acc}")
    assert agree >= 0.9


def test_unsupported_cases_are_one_paragraph(rnnpool_run, tmp_path):
    """An RNNPool int8 file without the Deployment beside it, a description without the file's constants, and a
    layer plan of an RNNPool network."""
    from tinyflow.firmware.codegen import generate
    from tinyflow.memory.layer_plan import layer_plan

    _, ctx, net = rnnpool_run
    alone = tmp_path / "model_int8.onnx"
    shutil.copy(ctx.onnx_int8_path, alone)
    with pytest.raises(UnsupportedLayerError, match=r"deployment.npz.*scheduler=rnnpool") as info:
        required_graph(alone, "Gather")
    assert "\n" not in str(info.value)
    with pytest.raises(FirmwareError, match="attach_onnx_constants"):
        build_qmodel(rnnpool_graph(net.rnnpool_arch))
    model = build_qmodel(_description(net, ctx.onnx_int8_path))
    with pytest.raises(FirmwareError, match="Plan it with scheduler=rnnpool"):
        generate(model, layer_plan(model.graph, MemoryConfig()))


@pytest.mark.slow
@needs_toolchain
def test_backend_c_runs_the_rnnpool_plan(rnnpool_run):
    """backend=c through the deploy stage: the map file's arena is the rnnpool plan's, every output equals the
    oracle's bit for bit (float32 RNNPool included), top-1 against onnxruntime, instructions per inference."""
    cfg, ctx, _ = rnnpool_run
    with activate(NullTracker()):
        ctx = get_stage("deploy")(cfg, ctx)
    fw = ctx.extra["firmware"]
    print("rnnpool firmware:", json.dumps({k: v for k, v in fw.items() if isinstance(v, int | float | str)}))
    assert fw["built"] and fw["fits"] and fw["scheduler"] == "rnnpool" and "float32" in fw["rnnpool_arithmetic"]
    assert fw["arena_bytes"] == ctx.plan["arena_bytes"] == fw["plan_arena_bytes"]
    assert fw["images"] == IMAGES and fw["bit_exact"] == IMAGES
    assert fw["top1_agreement_onnxruntime"] >= 0.9
    assert fw["bss_bytes"] >= fw["arena_bytes"] + fw["scratch_bytes"]
    assert fw["instructions_per_inference"] > fw["macs"]
    assert "tf_rnnpool_patch" in (Path(fw["project_dir"]) / "model.c").read_text()


@pytest.mark.slow
@needs_toolchain
def test_gru_streamed_input_and_the_m4(tmp_path):
    """The GRU cell, the input streamed into the plan's per-patch buffer (memory.count_input=false) and the
    Cortex-M4 (fpv4-sp) at -Os: still bit-exact to the oracle, the arena the plan's."""
    from tinyflow.deploy.onnx_export import export_onnx
    from tinyflow.deploy.quantize import quantize_int8
    from tinyflow.memory.rnnpool_plan import rnnpool_plan

    cfg = compose_cfg()
    arch, net = _train_rnnpool(cfg, "gru", epochs=2)
    res = arch.resolution
    x = _test_images(cfg, 64)
    export_onnx(net, (1, 1, res, res), tmp_path / "model.onnx")
    path = quantize_int8(tmp_path / "model.onnx", tmp_path / "model_int8.onnx", x)
    graph = _description(net, path)
    plan = rnnpool_plan(graph, MemoryConfig(count_input=False))
    settings = FirmwareSettings(target="cortex_m4", opt="-Os")
    deployment = Deployment(graph, plan, {}, model_path=str(path), source="network description")
    fw = make_firmware(deployment, F746, tmp_path / "fw", x[:24], settings)
    print(
        "gru, streamed input, M4 -Os:", {k: fw[k] for k in ("arena_bytes", "bit_exact", "instructions_per_inference")}
    )
    assert fw["arena_bytes"] == plan.arena_bytes and fw["bit_exact"] == fw["images"] == 24


@pytest.mark.slow
@needs_toolchain
def test_firmware_cli_on_a_run_directory(rnnpool_run, tmp_path):
    """`python -m tinyflow.firmware network.path=<run>/model_int8.onnx scheduler=rnnpool`: the Deployment the
    schedule stage saved beside the file gives the network; the same arena and a bit-exact run."""
    _, ctx, _ = rnnpool_run
    cmd = [sys.executable, "-m", "tinyflow.firmware", f"network.path={ctx.onnx_int8_path}", "scheduler=rnnpool"]
    cmd += ["output=json", "tracking=none", "firmware.images=4", f"hydra.run.dir={tmp_path / 'run'}"]
    res = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    fw = json.loads(res.stdout)
    assert fw["arena_bytes"] == ctx.plan["arena_bytes"] and fw["bit_exact"] == fw["images"] == 4
