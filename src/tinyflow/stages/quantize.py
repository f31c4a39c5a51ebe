"""Stage `quantize`: export the final model (whatever network it is) to float ONNX, quantize it to int8
(onnxruntime, QDQ), and measure: float and int8 accuracy on the test split with their 95 % Wilson intervals
(`accuracy_*_ci95_low/high`, `test_images`; the int8-vs-float drop's Newcombe interval: tinyflow.confidence), the
files' sizes and the int8 file's flash count (`onnx_flash_*`). It plans nothing: the `schedule` stage plans and costs
the deployed network."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from tinyflow.confidence import ci_metrics, difference, format_accuracy
from tinyflow.context import RunContext
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
from tinyflow.metrics_vocabulary import FLASH, figures, intervals, record
from tinyflow.network_memory import graph_memory
from tinyflow.plugins import build_plugin
from tinyflow.stages import stage
from tinyflow.tracking import active_tracker

log = logging.getLogger(__name__)

FLOAT_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"


def int8_memory(cfg: DictConfig, ctx: RunContext, int8_path: Path) -> dict[str, float]:
    """SRAM of the int8 file's IR (the network's description when the importer does not read the file), planned
    by the configured scheduler, for the record."""
    from tinyflow.deploy.model import context_network
    from tinyflow.ir import import_model

    try:
        graph = import_model(str(int8_path))
    except Exception:  # an op the importer does not read: the description's IR
        try:
            graph = context_network(ctx, "quantize").graph()
        except Exception as exc:
            log.warning("quantize: no IR to plan for the record (%s)", exc)
            return {}
    return graph_memory(cfg, graph, ctx.schedule_options)


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
    calib = calibration_images(data, settings.calibration_images)
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
    n = len(images)  # every accuracy here is a proportion of these test images: its 95 % interval
    metrics |= ci_metrics("accuracy_float", metrics["accuracy_float"], n)
    metrics |= ci_metrics("accuracy_int8", metrics["accuracy_int8"], n)
    _, low, high = difference(metrics["accuracy_float"], n, metrics["accuracy_int8"], n)
    metrics |= {"accuracy_drop_int8_ci95_low": low, "accuracy_drop_int8_ci95_high": high}
    counted = int8_flash_bytes(int8_path)  # the int8 file's own flash: initializers as a runtime stores them
    metrics.update({f"onnx_{k}": float(v) for k, v in counted.items()})
    tracker = active_tracker()

    ctx.onnx_path, ctx.onnx_int8_path = str(float_path), str(int8_path)
    ctx.artifacts.update(onnx=str(float_path), onnx_int8=str(int8_path))
    ctx.metrics.update(metrics)
    tracker.log_params({"quantize": settings.__dict__})
    tracker.log_metrics(metrics)
    values = {**int8_memory(cfg, ctx, int8_path), FLASH: float(counted["flash_bytes"])}
    values.update(figures(accuracy_float=metrics["accuracy_float"], accuracy_int8=metrics["accuracy_int8"]))
    values.update(intervals(n=n, accuracy_float=metrics["accuracy_float"], accuracy_int8=metrics["accuracy_int8"]))
    record(ctx, tracker, "quantize", values)
    log.info(
        "int8: accuracy %s (float %s), int8 file's flash %d B",
        format_accuracy(metrics["accuracy_int8"], n),
        format_accuracy(metrics["accuracy_float"], n),
        counted["flash_bytes"],
    )
    return ctx
