"""The firmware (docs/design.md §15): int8 layers, the NumPy oracle, the generated C built with arm-none-eabi-gcc
and run on qemu — bit-exact to the oracle, top-1 equal to onnxruntime, the arena at the plan's size, the linker's
memory check; backend=c through the real quantize / schedule / deploy stages; the errors a user can hit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, cli_env
from deploy_helpers import finetuned_run
from tinyflow.deployment import Deployment
from tinyflow.device import Device
from tinyflow.firmware import build
from tinyflow.firmware.emulator import read_outputs
from tinyflow.firmware.fixedpoint import quantize_multiplier, requantize
from tinyflow.firmware.oracle import run_oracle
from tinyflow.firmware.project import FirmwareSettings, make_firmware
from tinyflow.firmware.qmodel import UnsupportedLayerError, build_qmodel, to_nhwc
from tinyflow.ir.onnx_import import from_onnx
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan
from tinyflow.stages import get_stage
from tinyflow.tracking import NullTracker, activate

F746 = Device("stm32f746", 320, 1024, "cortex_m7", 216)


def _qmodel(path):
    """The integer model of an int8 ONNX file: imported, then lowered from the graph alone."""
    return build_qmodel(from_onnx(path))


def _deploy(model, plan, path) -> Deployment:
    """A Deployment of the model's graph and a plan of it (what `plan_deployment` makes, without the analysis)."""
    return Deployment(model.graph, plan, {}, model_path=str(path), source="int8 model file")


def _requantize_scalar(x: int, m: int, shift: int) -> int:
    """TF Lite's MultiplyByQuantizedMultiplier on Python ints: the doubling high multiply rounds half up
    (toward +inf for a positive product, toward zero for a negative one), the divide by 2^e half away from zero."""
    x = max(-(2**31), min(2**31 - 1, x * 2 ** max(shift, 0)))
    ab = x * m
    high = (ab + 2**30) // 2**31 if ab >= 0 else -((-ab - 1 + 2**30) // 2**31)
    e = max(-shift, 0)
    if e == 0:
        return high
    return (abs(high) + 2 ** (e - 1)) // 2**e * (1 if high >= 0 else -1)


def test_requantize_is_rounded_multiplication():
    """TF Lite's fixed point: (m, shift) reproduces M to 31 bits; the vectorised requantization equals the scalar
    definition and is within one step of x·M rounded."""
    rng = np.random.default_rng(0)
    for real in [1e-5, 3.1e-3, 0.25, 0.7, 0.9999, 1.0, 1.7, 37.5]:
        m, shift = quantize_multiplier(real)
        assert 2**30 <= m < 2**31
        assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2**-30
        x = rng.integers(-(2**20), 2**20, 300)
        got = requantize(x, m, shift)
        assert got.tolist() == [_requantize_scalar(int(v), m, shift) for v in x]
        assert np.abs(got - np.rint(x * real)).max() <= 1
    assert requantize(np.array([-3, -2, 2, 3]), 2**30, 0).tolist() == [-1, -1, 1, 2]  # x / 2: halves round up


@pytest.fixture(scope="module")
def stages_run(tmp_path_factory):
    """The real quantize and schedule stages on the tiny digits network (the deployment tests' fixture)."""
    cfg, ctx, _ = finetuned_run(tmp_path_factory.mktemp("fw"), "backend=c", "device=stm32f746")
    with activate(NullTracker()):
        ctx = get_stage("quantize")(cfg, ctx)
        ctx = get_stage("schedule")(cfg, ctx)
    return cfg, ctx


def _test_images(cfg, n: int) -> np.ndarray:
    from tinyflow.deploy.quantize import collect_images
    from tinyflow.plugins import build_plugin

    data = build_plugin(cfg, "data")
    data.set_resolution(16)
    data.setup("test")
    return collect_images(data.test_dataloader(), n)[0]


def _onnxruntime_layer_outputs(path: str, model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every layer's int8 output under onnxruntime (its QuantizeLinear exposed as a graph output), NHWC."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(path)
    consts = {i.name for i in proto.graph.initializer}
    by_input = {n.input[0]: n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in consts}
    names = {}
    for node in proto.graph.node:
        if node.name in {layer.name for layer in model.layers} and node.output[0] in by_input:
            names[node.name] = by_input[node.output[0]].output[0]
    names[model.input_name] = by_input[model.input_name].output[0]
    for t in names.values():
        proto.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.INT8, None))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x})))
    return {layer: to_nhwc(got[t]) for layer, t in names.items()}


def test_oracle_agrees_with_onnxruntime(stages_run):
    """Each integer layer, fed onnxruntime's own int8 input, gives onnxruntime's int8 output but for rounding ties
    (onnxruntime: float arithmetic between Q/DQ pairs, round half to even; here TF Lite's fixed point); end to end
    the logits drift by a few int8 steps through the layers, and the top-1 agrees on the test split except on
    near-ties (the two best logits within two steps on both sides)."""
    from tinyflow.firmware.oracle import run_layer
    from tinyflow.firmware.qmodel import hwc

    cfg, ctx = stages_run
    model = _qmodel(ctx.onnx_int8_path)
    x = _test_images(cfg, 300)
    ref = _onnxruntime_layer_outputs(ctx.onnx_int8_path, model, x)
    checked = 0
    for layer in model.layers:
        if layer.name not in ref or not all(i in ref for i in layer.inputs):
            continue
        ins = [ref[i].reshape(len(x), *hwc(shape)) for i, shape in zip(layer.inputs, layer.in_shapes)]
        ours = run_layer(layer, ins).reshape(len(x), -1).astype(np.int32)
        theirs = ref[layer.name].reshape(len(x), -1).astype(np.int32)
        assert np.abs(ours - theirs).max() <= 1 and np.mean(ours == theirs) >= 0.98, layer.name
        checked += 1
    assert checked >= len([la for la in model.layers if la.kind != "view"]) - 1
    ours = model.dequantize_output(run_oracle(model, model.quantize_input(x)).reshape(len(x), -1))
    from tinyflow.deploy.onnx_export import run_onnx, session

    theirs = run_onnx(session(ctx.onnx_int8_path), x)
    step = model.output_scale  # one int8 step of the logits
    assert np.abs(ours - theirs).max() <= 6 * step + 1e-6  # a few steps of drift through the layers
    # the top-1 agrees but where the two best logits are within two steps of each other on both sides (a tie in
    # ours, one step apart in onnxruntime's: the first index wins a tie): a near-tie flips, nothing else does
    mine, ref_top = ours.argmax(1), theirs.argmax(1)
    rows = np.arange(len(x))
    gap_theirs = theirs[rows, ref_top] - theirs[rows, mine]
    gap_ours = ours[rows, mine] - ours[rows, ref_top]
    flipped = mine != ref_top
    assert np.all(gap_theirs[flipped] <= 2 * step + 1e-6) and np.all(gap_ours[flipped] <= 2 * step + 1e-6)
    assert np.mean(~flipped) >= 0.97


@pytest.mark.slow
def test_backend_c_deploy_stage(stages_run):
    """backend=c through the deploy stage: the firmware's arena is the plan's, every output equals the oracle's,
    top-1 equals onnxruntime's on >= 100 test images; SRAM and flash from the map file; a report section."""
    cfg, ctx = stages_run
    with activate(NullTracker()):
        ctx = get_stage("deploy")(cfg, ctx)
    fw = ctx.extra["firmware"]
    assert fw["built"] and fw["fits"]
    assert fw["arena_bytes"] == ctx.plan["arena_bytes"] == fw["plan_arena_bytes"]
    assert fw["images"] >= 100 and fw["bit_exact"] == fw["images"]
    assert fw["top1_agreement_onnxruntime"] >= 0.995
    assert fw["sram_bytes"] == fw["bss_bytes"] + fw["data_bytes"] + fw["stack_bytes"]
    assert fw["bss_bytes"] >= fw["arena_bytes"] + fw["scratch_bytes"]
    assert fw["flash_bytes"] > fw["rodata_bytes"] > 0 and fw["instructions_per_inference"] > fw["macs"]
    assert Path(ctx.artifacts["firmware_zip"]).is_file() and Path(ctx.artifacts["firmware_map"]).is_file()
    assert ctx.metrics["firmware_bit_exact"] == fw["images"]
    from tinyflow.report import write_report

    with activate(NullTracker()):
        markdown = write_report(cfg, ctx)
    report = json.loads((Path(ctx.output_dir) / "report.json").read_text())
    assert report["firmware"]["arena_bytes"] == fw["arena_bytes"]
    assert f"| bit-exact vs oracle | {fw['images']} / {fw['images']} |" in markdown
    assert "| firmware fits (linker) | yes |" in markdown


@pytest.mark.slow
@pytest.mark.parametrize(
    ("memory", "target", "rounding"),
    [
        ({"inplace_depthwise": False, "count_input": False}, "cortex_m7", "single"),
        ({"inplace_depthwise": True, "arena_algorithm": "first_fit_decreasing"}, "cortex_m4", "tflite"),
    ],
)
def test_other_plans_and_the_m4(stages_run, tmp_path, memory, target, rounding):
    """Other placements of the same network (no in-place depthwise, input not in the arena), the Cortex-M4 target
    and TF Lite's double rounding: still bit-exact, arena still the plan's."""
    _, ctx = stages_run
    model = _qmodel(ctx.onnx_int8_path)
    plan = layer_plan(model.graph, MemoryConfig(**memory))
    x = np.random.default_rng(5).standard_normal((12, *model.input_shape[1:])).astype(np.float32)
    settings = FirmwareSettings(target=target, opt="-Os", rounding=rounding)
    fw = make_firmware(_deploy(model, plan, ctx.onnx_int8_path), F746, tmp_path, x, settings)
    assert (
        fw["rounding"] == rounding
        and "TF_SINGLE_ROUNDING " + str(int(rounding == "single")) in (tmp_path / "firmware" / "model.c").read_text()
    )
    assert fw["arena_bytes"] == plan.arena_bytes and fw["bit_exact"] == 12
    assert fw["machine"] == {"cortex_m7": "mps2-an500", "cortex_m4": "mps2-an386"}[target]


@pytest.mark.slow
def test_patch_plan_equals_layer_plan_on_the_emulator(stages_run, tmp_path):
    """MCUNetV2 patch-by-patch execution of the first blocks in C: the same int8 outputs as the layer plan and the
    oracle — also with a residual add inside the patch stage —, the patch plan's smaller arena in the map file,
    more instructions for the recomputed halo (the ratio printed beside the MAC ratio)."""
    from tinyflow.memory.patch_plan import patch_plan

    _, ctx = stages_run
    model = _qmodel(ctx.onnx_int8_path)
    layer = layer_plan(model.graph, MemoryConfig())
    small = patch_plan(model.graph, MemoryConfig(), 3, 2)
    with_add = patch_plan(model.graph, MemoryConfig(), 5, 3)
    assert small.arena_bytes < layer.arena_bytes and any(s.op == "add" and s.patch for s in with_add.steps)
    x = np.random.default_rng(7).standard_normal((10, *model.input_shape[1:])).astype(np.float32)
    outputs, fws = [], []
    for name, plan in (("layer", layer), ("small", small), ("add", with_add)):
        fw = make_firmware(_deploy(model, plan, ctx.onnx_int8_path), F746, tmp_path / name, x, FirmwareSettings())
        assert fw["bit_exact"] == 10 and fw["arena_bytes"] == plan.arena_bytes
        outputs.append(read_outputs(fw["project_dir"]))
        fws.append(fw)
    assert np.array_equal(outputs[0], outputs[1]) and np.array_equal(outputs[0], outputs[2])
    assert fws[1]["bss_bytes"] < fws[0]["bss_bytes"]
    ratio = fws[1]["instructions_per_inference"] / fws[0]["instructions_per_inference"]
    print(f"patch/layer: instructions {ratio:.3f}, MACs {small.macs / layer.macs:.3f}")
    assert ratio > 1.0 and small.macs > layer.macs


def test_overflow_names_the_region_and_bytes(stages_run, tmp_path):
    _, ctx = stages_run
    model = _qmodel(ctx.onnx_int8_path)
    plan = layer_plan(model.graph, MemoryConfig())
    tiny = Device("tiny", 2, 1024, "cortex_m7", 100)
    x = np.zeros((2, *model.input_shape[1:]), np.float32)
    with pytest.raises(build.LinkOverflowError, match=r"region RAM overflowed by [0-9,]+ B") as info:
        make_firmware(_deploy(model, plan, ctx.onnx_int8_path), tiny, tmp_path, x, FirmwareSettings())
    assert info.value.region == "RAM" and info.value.over_bytes > plan.arena_bytes - 2048
    # the paragraph says what the plan needs: arena + the firmware's overhead (which plans made for a device count)
    assert f"arena {plan.arena_bytes:,} + firmware overhead" in str(info.value) and "stack" in str(info.value)
    assert (tmp_path / "firmware" / "model.c").is_file()
    fw = make_firmware(
        _deploy(model, plan, ctx.onnx_int8_path), tiny, tmp_path, x, FirmwareSettings(on_overflow="report")
    )
    assert fw["fits"] is False and fw["overflow_region"] == "RAM" and fw["bit_exact"] == 2


def test_missing_toolchain_writes_the_project(stages_run, tmp_path, monkeypatch):
    _, ctx = stages_run
    model = _qmodel(ctx.onnx_int8_path)
    plan = layer_plan(model.graph, MemoryConfig())
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    x = np.zeros((1, *model.input_shape[1:]), np.float32)
    fw = make_firmware(_deploy(model, plan, ctx.onnx_int8_path), F746, tmp_path, x, FirmwareSettings())
    assert fw["built"] is False and "arm-none-eabi-gcc" in fw["skipped"] and "not built or run" in fw["skipped"]
    assert (tmp_path / "firmware" / "model.c").is_file() and (tmp_path / "firmware.zip").is_file()
    with pytest.raises(build.ToolchainMissing, match="apt-get install gcc-arm-none-eabi"):
        build.require_tools()


def test_unsupported_op_is_one_paragraph(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("Sigmoid", ["xd"], ["h"], name="the_sigmoid"),
        helper.make_node("QuantizeLinear", ["h", "s", "z"], ["hq"]),
        helper.make_node("DequantizeLinear", ["hq", "s", "z"], ["y"]),
    ]
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    path = tmp_path / "sig.onnx"
    onnx.save(model, path)
    with pytest.raises(UnsupportedLayerError, match=r"node 'the_sigmoid' \(act\).*supported: conv2d"):
        build_qmodel(from_onnx(path))


@pytest.mark.slow
def test_firmware_cli_json(stages_run, tmp_path):
    _, ctx = stages_run
    cmd = [sys.executable, "-m", "tinyflow.firmware", f"network.path={ctx.onnx_int8_path}", "output=json"]
    cmd += ["tracking=none", "firmware.images=5", f"hydra.run.dir={tmp_path / 'run'}"]
    res = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    fw = json.loads(res.stdout)
    assert fw["bit_exact"] == fw["images"] == 5 and fw["fits"] is True
    assert json.loads((tmp_path / "run" / "firmware.json").read_text())["arena_bytes"] == fw["arena_bytes"]
    bad = subprocess.run(
        [
            *cmd[:4],
            "tracking=none",
            "device=custom",
            "device.sram_kb=2",
            "device.flash_kb=64",
            f"hydra.run.dir={tmp_path / 'r2'}",
        ],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0 and "overflowed by" in bad.stderr and "Traceback" not in bad.stderr
    assert os.path.isfile(tmp_path / "r2" / "firmware" / "model.c")


KWS = REPO / "tests" / "data" / "models" / "kws_ref_model.onnx"  # MLPerf Tiny, notice in that folder


@pytest.mark.slow
def test_real_tflite_converted_model(tmp_path):
    """MLPerf Tiny's keyword-spotting DS-CNN (a converted TF Lite model: int8 input and output, reshapes, a
    MatMul + bias Add, softmax): bit-exact to the oracle, its arena TF Lite Micro's activation arena (16,000 B),
    top-1 equal to onnxruntime."""
    model = _qmodel(KWS)
    assert model.int8_io == (True, True) and [layer.kind for layer in model.layers][-1] == "softmax"
    plan = layer_plan(model.graph, MemoryConfig())
    q = np.random.default_rng(0).integers(-128, 128, (20, *model.input_shape[1:]))
    x = ((q - model.input_zp) * np.float32(model.input_scale)).astype(np.float32)
    fw = make_firmware(_deploy(model, plan, KWS), F746, tmp_path, x, FirmwareSettings())
    assert fw["arena_bytes"] == plan.arena_bytes == 16000
    assert fw["bit_exact"] == 20 and fw["top1_agreement_onnxruntime"] == 1.0


def test_report_rows_measure_the_firmware_against_the_whole_device():
    """With a reserve (device.sram_reserve_kb) the plan's budget is smaller than the device; the firmware, which
    holds what the reserve is for, is measured against the whole SRAM and flash, as its linker script is."""
    from tinyflow.firmware.report_rows import firmware_rows

    fw = {
        "built": True,
        "fits": True,
        "target": "cortex_m7",
        "opt": "-O2",
        "machine": "mps2-an500",
        "arena_bytes": 23040,
        "plan_arena_bytes": 23040,
        "sram_bytes": 24413,
        "bss_bytes": 23769,
        "data_bytes": 0,
        "stack_bytes": 644,
        "flash_bytes": 227416,
        "device_sram_bytes": 32768,
        "device_flash_bytes": 262144,
        "bit_exact": 100,
        "images": 100,
        "top1_agreement_onnxruntime": 1.0,
        "instructions_per_inference": 24415440,
        "instructions_per_mac": 5.06,
        "device": "samd21",
    }
    rows = {r[0]: r for r in firmware_rows(fw, sram_budget=27 * 1024, flash_budget=256 * 1024)}
    assert rows["firmware SRAM"][2].endswith("of 32.0 KiB (75 % used)")
    assert rows["firmware flash"][2] == "of 256.0 KiB (87 % used)"
