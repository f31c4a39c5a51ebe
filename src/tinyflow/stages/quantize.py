"""Stage `quantize`: export the final model to float ONNX, quantize it to int8 (onnxruntime, QDQ), measure
float and int8 accuracy on the test split, and let the memory engine analyse the int8 file.

An `RNNPoolNet` (finetune under `scheduler=rnnpool`) is exported and quantized the same way, but the memory engine
cannot import its ONNX (RNNPool becomes Gather / MatMul / unrolled recurrences): its memory figures come from the
rnnpool plan of its IR (`ir_*` metrics, `ctx.extra["memory_source"]` says so); flash is the int8 file's count."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tinyflow.context import RunContext, atomic_write_text
from tinyflow.deploy.analysis import analyse_onnx, analyse_rnnpool
from tinyflow.deploy.model import load_final_model
from tinyflow.deploy.onnx_export import export_onnx
from tinyflow.deploy.quantize import (
    QuantizeSettings,
    calibration_images,
    collect_images,
    int8_flash_bytes,
    onnx_accuracy,
    quantize_int8,
    torch_accuracy,
)
from tinyflow.plugins import build_device, build_plugin
from tinyflow.stages import stage
from tinyflow.tracking import active_tracker

log = logging.getLogger(__name__)

FLOAT_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
RNNPOOL_SOURCE = (
    "rnnpool plan of the network's IR (rnnpool_graph of the model's RNNPoolArch): the ONNX importer lacks the ops "
    "RNNPool exports to, so these memory figures are not measured on the int8 file"
)


@stage("quantize")
def run(cfg: DictConfig, ctx: RunContext) -> RunContext:
    settings = QuantizeSettings.from_cfg(cfg.get("quantize"))
    arch, model = load_final_model(ctx, "quantize")
    data = build_plugin(cfg, "data")
    data.set_resolution(arch.resolution)
    data.setup("fit")
    out = Path(ctx.output_dir)
    shape = (1, arch.in_channels, arch.resolution, arch.resolution)

    float_path = export_onnx(model, shape, out / FLOAT_FILE, opset=settings.opset)
    calib = calibration_images(data, settings.calibration_images, seed=int(cfg.get("seed", 0)))
    int8_path = quantize_int8(
        float_path,
        out / INT8_FILE,
        calib,
        per_channel=settings.per_channel,
        calibrate_method=settings.calibrate_method,
        activation_type=settings.activation_type,
    )
    images, labels = collect_images(data.test_dataloader())
    metrics = {
        "accuracy_float": torch_accuracy(model, images, labels),
        "accuracy_int8": onnx_accuracy(int8_path, images, labels),
        "test_images": float(len(images)),
        "calibration_images": float(len(calib)),
        "onnx_float_file_bytes": float(float_path.stat().st_size),
        "onnx_int8_file_bytes": float(int8_path.stat().st_size),
    }
    metrics["accuracy_drop_int8"] = metrics["accuracy_float"] - metrics["accuracy_int8"]
    counted = int8_flash_bytes(int8_path)
    metrics.update({f"onnx_{k}": float(v) for k, v in counted.items()})
    metrics["flash_bytes"] = float(counted["flash_bytes"])

    rarch = getattr(model, "rnnpool_arch", None)
    if rarch is None:
        # what is deployed is what is measured: the engine's own plan of the int8 file
        engine, plan = analyse_onnx(cfg, int8_path, ctx.schedule_options)
        metrics.update({f"deployed_{k}": v for k, v in engine.items()})
        if "flash_bytes" in engine:
            metrics["flash_bytes"] = engine["flash_bytes"]
        label = "int8 ONNX"
    else:
        # the ONNX importer lacks RNNPool's ops: memory from the rnnpool plan of the IR, flash from the int8 file
        engine, plan = analyse_rnnpool(cfg, rarch)
        metrics.update({f"ir_{k}": v for k, v in engine.items()})
        ctx.extra["memory_source"] = "rnnpool plan of the IR (the ONNX importer lacks RNNPool's ops)"
        label = "RNNPool IR"
        log.info("quantize: %s; flash %d B counted from the int8 file", RNNPOOL_SOURCE, counted["flash_bytes"])
    for key in ("peak_sram_bytes", "arena_bytes", "macs", "latency_ms", "energy_mj"):
        if key in engine:
            metrics[key] = engine[key]
    tracker = active_tracker()
    if plan is not None:
        ctx.extra["deployed_plan"] = plan.summary()
        _log_plan(tracker, plan, build_device(cfg).sram_budget_bytes, out, label)

    ctx.onnx_path, ctx.onnx_int8_path = str(float_path), str(int8_path)
    ctx.artifacts.update(onnx=str(float_path), onnx_int8=str(int8_path))
    ctx.metrics.update(metrics)
    tracker.log_params({"quantize": settings.__dict__})
    tracker.log_metrics(metrics)
    log.info(
        "int8: accuracy %.4f (float %.4f), flash %d B",
        metrics["accuracy_int8"],
        metrics["accuracy_float"],
        metrics["flash_bytes"],
    )
    return ctx


def _log_plan(tracker: Any, plan: Any, sram_budget_bytes: int, out: Path, label: str = "int8 ONNX") -> None:
    """The engine's plan of the deployed model (`label`: what was planned): JSON next to the model, and its memory
    profile figure."""
    import matplotlib.pyplot as plt

    from tinyflow.deploy.plots import memory_profile_figure

    path = out / "deployed_plan.json"
    atomic_write_text(path, json.dumps(plan.to_dict(), indent=1, default=str))
    tracker.log_artifact(str(path))
    peak, arena = plan.peak_live_bytes / 1024, plan.arena_bytes / 1024
    title = f"{label}, {plan.scheduler}: peak {peak:.1f} KiB, arena {arena:.1f} KiB"
    fig = memory_profile_figure(plan.per_layer, sram_budget_bytes, title)
    tracker.log_figure(fig, "deployed_memory_profile.png")
    plt.close(fig)
