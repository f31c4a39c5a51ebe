"""The body of `python -m tinyflow.firmware`: import the int8 model (.onnx or .tflite), plan it with
`plan_deployment` (the one planning path), save the Deployment, make the firmware from it, report, track."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from tinyflow.analyze.networks import build_network
from tinyflow.configured_plan import plan_configured
from tinyflow.context import atomic_write_text
from tinyflow.deployment import DEPLOYMENT_FILE, Deployment
from tinyflow.errors import ConfigError
from tinyflow.firmware.project import FirmwareSettings, make_firmware
from tinyflow.firmware.qmodel import QModel, build_qmodel
from tinyflow.firmware.rnnpool_model import required_graph
from tinyflow.ir.graph import Graph
from tinyflow.plugins import build_device, build_plugin
from tinyflow.tracking import activate

RESULT_FILE = "firmware.json"
#: the firmware figures shown in the table, in order
TABLE_KEYS = (
    "plan_arena_bytes",
    "arena_bytes",
    "scratch_bytes",
    "text_bytes",
    "rodata_bytes",
    "data_bytes",
    "bss_bytes",
    "stack_bytes",
    "sram_bytes",
    "device_sram_bytes",
    "flash_bytes",
    "device_flash_bytes",
    "fits",
    "images",
    "bit_exact",
    "reference_check",
    "top1_agreement_onnxruntime",
    "max_diff_steps_onnxruntime",
    "top1_agreement_tflm",
    "max_diff_steps_tflm",
    "macs",
    "instructions_per_inference",
    "instructions_per_mac",
)


def test_images(model: QModel, n: int, seed: int, path: str | None) -> np.ndarray:
    """Float NCHW test images: a .npy file's, else seeded random int8 values dequantized (so quantizing them on
    the host and in onnxruntime gives back the same int8 input)."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"images_path: '{p}' is not a file; give a .npy array of float NCHW images")
        try:
            x = np.load(p, allow_pickle=False).astype(np.float32)  # no pickle: a .npy of objects is refused
        except (ValueError, OSError, TypeError) as exc:
            raise ConfigError(
                f"images_path: '{p}' is not a .npy array of numbers ({type(exc).__name__}: {str(exc)[:120]}); save "
                "the float NCHW images with numpy.save."
            ) from None
        if tuple(x.shape[1:]) != tuple(model.input_shape[1:]):
            raise ConfigError(
                f"images_path: '{p}' holds shape {list(x.shape)}; the model takes {list(model.input_shape)}"
            )
        return x[:n]
    rng = np.random.default_rng(seed)
    q = rng.integers(-128, 128, size=(n, *model.input_shape[1:]), dtype=np.int16)
    return ((q - model.input_zp) * np.float32(model.input_scale)).astype(np.float32)


def print_table(result: dict[str, Any]) -> None:
    print(f"firmware for {result['device']} ({result['target']}, {result['opt']}): {result.get('cpu_flags') or '—'}")
    if result.get("emulation"):
        print(f"  {result['emulation']}")
    if not result.get("built"):
        print(f"  {result.get('not_built') or result.get('skipped')}")
    for key in TABLE_KEYS:
        if key in result:
            value = result[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                text = str(value)
            else:
                text = f"{value:.4f}" if isinstance(value, float) else f"{value:,}"
            print(f"  {key:<30} {text}")
    if result.get("overflow"):
        print(f"  {result['overflow']}")
    print(f"  project: {result['project_dir']}")


def _importer(path: str) -> Any:
    """The importer a model file's suffix asks for: `.tflite` TF Lite's, anything else ONNX's."""
    from tinyflow.ir.onnx_import import from_onnx
    from tinyflow.ir.tflite_import import from_tflite

    return from_tflite if path.lower().endswith(".tflite") else from_onnx


def network_graph(node: Any) -> tuple[Graph, Any, str]:
    """The int8 model's IR (the importer of the config, or of the file's suffix when the config names the other
    format), no description network, and the file. An int8 file with ops the importer does not read is an
    RNNPool network when the schedule stage saved its Deployment beside it (`rnnpool_model.recorded_graph`),
    else one paragraph."""
    from tinyflow.ir.model_errors import UnsupportedOpError

    path = str(node.get("path"))
    own = str(node.get("_target_", "")).endswith(_importer(path).__name__)
    try:
        graph = build_network(node) if own else _importer(path)(path)
    except UnsupportedOpError as exc:
        graph, net = required_graph(path, exc.op)
        return graph, net, path
    if not isinstance(graph, Graph):
        raise ConfigError(
            "network: the firmware needs an int8 model file (its weights and quantization); give one with "
            "`network=onnx network.path=model_int8.onnx` (tinyflow's quantize stage writes one) or "
            "`network=tflite network.path=model.tflite`."
        )
    return graph, None, path


def plan_model(cfg: DictConfig, graph: Graph, network: Any, path: str | None) -> Deployment:
    """The model planned with the config's plugins (`plan_configured`, strict) — what `tinyflow.analyze` and the
    `schedule` stage plan for the same model and options."""
    return plan_configured(cfg, graph, network=network, model_path=path)


def run_firmware(cfg: DictConfig) -> dict[str, Any]:
    output = str(cfg.get("output", "table"))
    if output not in ("table", "json"):
        raise ConfigError(f"output: '{output}' is not one of table, json")
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    settings = FirmwareSettings(**dict(cfg.firmware))
    if OmegaConf.is_missing(cfg.network, "path"):
        raise ConfigError(
            "network.path: no model given; the firmware needs an int8 model file, e.g. "
            "`python -m tinyflow.firmware network.path=model_int8.onnx` (tinyflow's quantize stage writes one) or "
            "`python -m tinyflow.firmware network=tflite network.path=model.tflite`."
        )
    graph, network, path = network_graph(cfg.network)
    model = build_qmodel(graph)  # an op without a kernel is one paragraph before any planning
    scheduler, device = build_plugin(cfg, "scheduler"), build_device(cfg)
    deployment = plan_model(cfg, graph, network, path)
    deployment.save(out_dir / DEPLOYMENT_FILE)
    images = test_images(model, settings.images, int(cfg.get("seed", 0)), cfg.get("images_path"))
    tracker = build_plugin(cfg, "tracking")
    tags = {"run_name": f"firmware-{graph.name}-{scheduler.name}", "app": "firmware", "output_dir": str(out_dir)}
    with activate(tracker), tracker.job(cfg, tags), tracker.stage("firmware"):
        result = make_firmware(deployment, device, out_dir, images, settings)
        result["network"] = graph.name
        atomic_write_text(out_dir / RESULT_FILE, json.dumps(result, indent=2))
        numbers = {f"firmware_{k}": float(v) for k, v in result.items() if isinstance(v, int | float)}
        tracker.log_metrics(numbers)
        tracker.log_parent_metrics(numbers)
        tracker.log_artifact(str(out_dir / RESULT_FILE))
        for key in ("project_zip", "map_file"):
            if result.get(key):
                tracker.log_artifact(result[key], "firmware")
    if output == "json":
        print(json.dumps(result))
    else:
        print_table(result)
        for failure in result.get("failed_checks", []):
            print(f"  check FAILED: {failure}")
    failed = list(result.get("failed_checks", []))
    return {"status": "FAILED" if failed else "FINISHED", "output_dir": str(out_dir), "failed_checks": failed}
