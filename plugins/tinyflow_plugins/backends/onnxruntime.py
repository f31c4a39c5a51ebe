"""Backend `onnxruntime`: checks the exported float and int8 ONNX files of the Deployment on the host and logs them.

- the float ONNX must compute what PyTorch computes (max abs diff ≤ `check_tolerance` over `check_inputs`
  seeded inputs), else a loud `OnnxCheckError` with the measured difference;
- the int8 model's test accuracy is measured under onnxruntime and compared with the float model's;
- host latency of both files (median of `latency_runs` batch-1 runs);
- files, checks and a figure go to the tracker, the int8 and float models through `mlflow.onnx.log_model`;
- its `host` report section: host latency and the ONNX-vs-PyTorch difference.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from tinyflow.context import atomic_write_text
from tinyflow.contracts import BackendResult, ReportSection
from tinyflow.deploy.latency import host_latency
from tinyflow.deploy.model import MissingStageError
from tinyflow.deploy.onnx_export import check_onnx_against_torch
from tinyflow.deploy.quantize import collect_images, onnx_accuracy
from tinyflow.errors import ConfigError

log = logging.getLogger(__name__)


class OnnxRuntimeBackend:
    """Checks, measures and logs the ONNX files made by the `quantize` stage."""

    name = "onnxruntime"
    option_ranges: ClassVar[dict[str, dict[str, float]]] = {
        "check_inputs": {"min": 1},
        "latency_runs": {"min": 1},
        "latency_warmup": {"min": 0},
        "threads": {"min": 1},
        "seed": {"min": 0},
    }

    def __init__(
        self,
        check_inputs: int = 100,
        check_tolerance: float = 1e-4,
        int8_max_drop: float = 0.01,
        fail_on_int8_drop: bool = False,
        latency_runs: int = 100,
        latency_warmup: int = 10,
        threads: int = 1,
        log_models: bool = True,
        seed: int = 0,
    ):
        if check_inputs < 1:
            raise ConfigError(f"backend.check_inputs = {check_inputs}: need at least one input to compare.")
        if not check_tolerance > 0:
            raise ConfigError(f"backend.check_tolerance = {check_tolerance}: it must be positive (e.g. 1e-4).")
        self.check_inputs = int(check_inputs)
        self.check_tolerance = float(check_tolerance)
        self.int8_max_drop = float(int8_max_drop)
        self.fail_on_int8_drop = bool(fail_on_int8_drop)
        self.latency_runs = int(latency_runs)
        self.latency_warmup = int(latency_warmup)
        self.threads = int(threads)
        self.log_models = bool(log_models)
        self.seed = int(seed)

    def deploy(
        self, deployment: Any, model: Any, data: Any, workdir: str, tracker: Any, files: dict[str, str]
    ) -> BackendResult:
        if model is None:
            raise MissingStageError(
                "backend onnxruntime: asked to deploy but no model exists; stage 'finetune' writes the final model. "
                "Add 'finetune' (and 'quantize') before 'deploy' in `stages:`."
            )
        for key, producer in (("onnx", "quantize"), ("onnx_int8", "quantize")):
            if not files.get(key) or not Path(files[key]).exists():
                raise MissingStageError(
                    f"backend onnxruntime: the {key} file ({files.get(key) or 'none'}) does not exist; stage "
                    f"'{producer}' exports it. Add '{producer}' before 'deploy' in `stages:`."
                )
        shape = tuple(deployment.input_shape)
        check = check_onnx_against_torch(
            model, files["onnx"], shape, n_inputs=self.check_inputs, tolerance=self.check_tolerance, seed=self.seed
        )
        images, labels = collect_images(data.test_dataloader())
        acc_float = onnx_accuracy(files["onnx"], images, labels, self.threads)
        acc_int8 = onnx_accuracy(files["onnx_int8"], images, labels, self.threads)
        int8_ok = acc_int8 >= acc_float - self.int8_max_drop
        message = (
            f"int8 accuracy {acc_int8:.4f} vs float {acc_float:.4f} (drop {acc_float - acc_int8:+.4f}, "
            f"allowed {self.int8_max_drop:g})"
        )
        if not int8_ok:
            if self.fail_on_int8_drop:
                raise ConfigError(
                    f"backend onnxruntime: {message}. Raise quantize.calibration_images, try "
                    "quantize.calibrate_method=percentile, or set backend.fail_on_int8_drop=false."
                )
            log.warning("backend onnxruntime: %s", message)
        lat_float = host_latency(files["onnx"], shape, self.latency_runs, self.latency_warmup, self.threads)
        lat_int8 = host_latency(files["onnx_int8"], shape, self.latency_runs, self.latency_warmup, self.threads)

        metrics = {
            **check,
            "accuracy_float_onnx": acc_float,
            "accuracy_int8_onnx": acc_int8,
            "accuracy.float": acc_float,  # the shared names (docs/design.md §12)
            "accuracy.int8": acc_int8,
            "host_latency_float_ms": lat_float["median_ms"],
            "host_latency_int8_ms": lat_int8["median_ms"],
            "host_latency_float_p90_ms": lat_float["p90_ms"],
            "host_latency_int8_p90_ms": lat_int8["p90_ms"],
        }
        checks = {
            "onnx_matches_torch": True,  # check_onnx_against_torch raised otherwise
            "onnx_max_abs_diff": check["onnx_max_abs_diff"],
            "onnx_check_tolerance": self.check_tolerance,
            "int8_accuracy_ok": bool(int8_ok),
            "int8_accuracy_message": message,
            "host_latency_runs": self.latency_runs,
            "host_threads": self.threads,
        }
        out = Path(workdir)
        checks_path = out / "deploy_checks.json"
        atomic_write_text(checks_path, json.dumps({"checks": checks, "metrics": metrics}, indent=2, sort_keys=True))
        figure_path = out / "deploy.png"
        fig = _figure(acc_float, acc_int8, lat_float["runs_ms"], lat_int8["runs_ms"])
        fig.savefig(figure_path, dpi=100)

        tracker.log_metrics(metrics)
        tracker.log_parent_metrics({"host_latency_int8_ms": metrics["host_latency_int8_ms"]})
        tracker.set_tags({"deploy.onnx_matches_torch": "true", "deploy.int8_accuracy_ok": str(int8_ok).lower()})
        for path in (files["onnx"], files["onnx_int8"], checks_path):
            tracker.log_artifact(str(path), "deploy")
        tracker.log_figure(fig, "deploy.png")
        plt.close(fig)
        if self.log_models:
            tracker.log_onnx_model(files["onnx_int8"], name="model_int8")
            tracker.log_onnx_model(files["onnx"], name="model_float")
        return BackendResult(
            metrics=metrics,
            checks=checks,
            files={"deploy_checks": str(checks_path), "deploy_figure": str(figure_path)},
            sections=[_section(metrics, self.latency_runs)],
        )


def _section(metrics: dict[str, float], runs: int) -> ReportSection:
    """The report's rows of this backend: host latency and the ONNX check."""
    return ReportSection(
        "host (onnxruntime)",
        [
            ("host latency (int8)", f"{metrics['host_latency_int8_ms']:.3f} ms", f"onnxruntime, median of {runs}"),
            ("host latency (float)", f"{metrics['host_latency_float_ms']:.3f} ms", f"onnxruntime, median of {runs}"),
            ("accuracy (int8, onnxruntime)", f"{100 * metrics['accuracy_int8_onnx']:.2f} %", "test split"),
            ("ONNX vs PyTorch", f"{metrics['onnx_max_abs_diff']:.2e}", "max abs diff, logits"),
        ],
    )


def _figure(acc_float: float, acc_int8: float, lat_float: list[float], lat_int8: list[float]) -> Any:
    """Accuracy float vs int8, and the host latency distributions."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    bars = ax1.bar(["float32", "int8"], [100 * acc_float, 100 * acc_int8], color=["#4c72b0", "#dd8452"])
    ax1.bar_label(bars, fmt="%.2f")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_ylim(max(0.0, 100 * min(acc_float, acc_int8) - 10), 100)
    ax1.set_title("accuracy (onnxruntime)")
    ax2.boxplot([lat_float, lat_int8], tick_labels=["float32", "int8"])
    ax2.set_ylabel("host latency per image (ms)")
    ax2.set_title(f"host latency, {len(lat_float)} runs")
    fig.tight_layout()
    return fig
