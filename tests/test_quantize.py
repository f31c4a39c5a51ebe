"""Stage `quantize`: float ONNX export, onnxruntime int8 QDQ quantization, accuracies, flash from the int8 file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from deploy_helpers import compose_cfg, finetuned_run
from tinyflow.context import RunContext
from tinyflow.deploy.model import MissingStageError
from tinyflow.deploy.onnx_export import initializer_arrays
from tinyflow.errors import ConfigError
from tinyflow.stages import get_stage


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory):
    cfg, ctx, model = finetuned_run(tmp_path_factory.mktemp("run"))
    return cfg, get_stage("quantize")(cfg, ctx), model


def _conv_weights(path: str) -> dict[str, np.ndarray]:
    """Quantized weights of the compute nodes (int8 initializers behind DequantizeLinear), by node."""
    m = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    out = {}
    for node in m.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            dq = producers[node.input[1]]
            assert dq.op_type == "DequantizeLinear", f"{node.name}: weight is not quantized"
            out[node.name] = (inits[dq.input[0]], inits[dq.input[1]])
    return out


def test_exports_float_and_int8_files(quantized) -> None:
    _, ctx, model = quantized
    assert Path(ctx.onnx_path).exists() and Path(ctx.onnx_int8_path).exists()
    ops = {n.op_type for n in onnx.load(ctx.onnx_int8_path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = _conv_weights(ctx.onnx_int8_path)
    n_layers = sum(1 for m in model.modules() if type(m).__name__ in ("Conv2d", "Linear"))
    assert len(weights) == n_layers
    for name, (w, scale) in weights.items():
        assert w.dtype == np.int8, name
        assert scale.size == w.shape[0], f"{name}: per-channel weights need one scale per output channel"


def test_int8_accuracy_close_to_float(quantized) -> None:
    _, ctx, _ = quantized
    m = ctx.metrics
    assert m["accuracy_float"] > 0.6, "the tiny net should learn the digits"
    assert abs(m["accuracy_float"] - m["accuracy_int8"]) <= 0.03
    assert m["test_images"] > 100 and m["calibration_images"] == 256


def test_flash_counted_from_the_int8_file(quantized) -> None:
    """int8 weights + 4 B bias + 4 B scale per output channel, checked against the PyTorch layers."""
    _, ctx, model = quantized
    expected = 0
    for module in model.modules():
        name = type(module).__name__
        if name in ("Conv2d", "Linear"):
            out_channels = module.weight.shape[0]
            expected += module.weight.numel() + 8 * out_channels
    assert ctx.metrics["onnx_flash_bytes"] == expected
    assert ctx.metrics["onnx_flash_float_bytes"] == 0
    assert ctx.plan is None and "flash_bytes" not in ctx.metrics  # quantize measures; only schedule plans
    # a quarter of the float file's weight bytes, give or take the per-channel overheads
    assert ctx.metrics["onnx_int8_file_bytes"] < ctx.metrics["onnx_float_file_bytes"]


def test_quantize_is_deterministic(quantized, tmp_path: Path) -> None:
    cfg, ctx, _ = quantized
    again = RunContext(output_dir=str(tmp_path), arch=ctx.arch, model_checkpoint=ctx.model_checkpoint)
    again = get_stage("quantize")(cfg, again)
    first, second = initializer_arrays(ctx.onnx_int8_path), initializer_arrays(again.onnx_int8_path)
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)
    for key in ("accuracy_float", "accuracy_int8", "onnx_flash_bytes"):
        assert again.metrics[key] == ctx.metrics[key]


def test_per_tensor_option_changes_the_scales(quantized, tmp_path: Path) -> None:
    cfg, ctx, _ = quantized
    cfg = cfg.copy()
    cfg.quantize.per_channel = False
    cfg.quantize.calibration_images = 32
    other = RunContext(output_dir=str(tmp_path), arch=ctx.arch, model_checkpoint=ctx.model_checkpoint)
    other = get_stage("quantize")(cfg, other)
    assert all(scale.size == 1 for _, scale in _conv_weights(other.onnx_int8_path).values())
    assert other.metrics["calibration_images"] == 32


def test_quantize_before_finetune_names_the_stage(quantized, tmp_path: Path) -> None:
    cfg, _, _ = quantized
    with pytest.raises(MissingStageError, match="finetune"):
        get_stage("quantize")(cfg, RunContext(output_dir=str(tmp_path)))


def test_unknown_quantize_setting_is_named(quantized, tmp_path: Path) -> None:
    cfg, ctx, _ = quantized
    cfg = cfg.copy()
    cfg.quantize.calibrate_method = "median"
    other = RunContext(output_dir=str(tmp_path), arch=ctx.arch, model_checkpoint=ctx.model_checkpoint)
    with pytest.raises(ConfigError, match="calibrate_method"):
        get_stage("quantize")(cfg, other)


def test_schedule_plans_the_deployed_int8_file(quantized, tmp_path: Path) -> None:
    """What is deployed is what is measured: `schedule` imports the int8 ONNX; its flash is the file's own count,
    and its layer plan equals the plan of the arch the file was exported from."""
    cfg, ctx, _ = quantized
    from tinyflow.arch.genome import Arch
    from tinyflow.ir import from_arch
    from tinyflow.plugins import build_memory, build_plugin

    done = get_stage("schedule")(cfg, RunContext(**{**ctx.__dict__, "output_dir": str(tmp_path)}))
    plan = done.plan
    assert plan["source"] == "int8 ONNX" and plan["network"] == "model_int8"
    assert plan["flash_bytes"] == ctx.metrics["onnx_flash_bytes"] and "ir_flash_bytes" not in plan
    arch_plan = build_plugin(cfg, "scheduler").plan(from_arch(Arch.from_dict(ctx.arch)), build_memory(cfg))
    assert plan["peak_live_bytes"] == arch_plan.peak_live_bytes
    assert plan["arena_bytes"] == arch_plan.arena_bytes
    assert plan["macs"] == arch_plan.macs
    assert (tmp_path / "plan.json").exists()


def test_schedule_uses_the_searched_options_on_the_int8_file(quantized, tmp_path: Path) -> None:
    cfg, ctx, _ = quantized
    cfg = compose_cfg("scheduler=patch")
    other = RunContext(
        **{**ctx.__dict__, "output_dir": str(tmp_path), "schedule_options": {"n_patches": 2, "patch_blocks": 2}}
    )
    plan = get_stage("schedule")(cfg, other).plan
    assert (plan["scheduler"], plan["n_patches"], plan["patch_blocks"], plan["source"]) == ("patch", 2, 2, "int8 ONNX")
    assert plan["macs"] > plan["layer_macs"], "overlapping patches recompute"
