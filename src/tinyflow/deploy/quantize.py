"""int8 post-training static quantization with onnxruntime's tooling, and the figures of the int8 model.

Weights int8 symmetric per output channel, activations int8 per tensor (asymmetric), QDQ format, calibration on
N training images. The flash of the quantized model is counted from the tensors stored in the int8 file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from tinyflow.atomic import atomic_path
from tinyflow.deploy.onnx_export import INPUT_NAME, run_onnx, session
from tinyflow.errors import ConfigError, DataError

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
ACTIVATION_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
COMPUTE_OPS = {"Conv", "Gemm", "MatMul", "ConvTranspose"}


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds calibration images to onnxruntime's calibrator, a batch at a time."""

    def __init__(self, images: np.ndarray, batch_size: int = 32, input_name: str = INPUT_NAME):
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.batch_size = batch_size
        self.input_name = input_name
        self._it: Iterator[dict[str, np.ndarray]] | None = None
        self.rewind()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(self.images), self.batch_size):
            yield {self.input_name: self.images[i : i + self.batch_size]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)  # type: ignore[arg-type]

    def rewind(self) -> None:
        self._it = self._batches()


def _as_numpy(batch: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels) from a dataloader batch or dataset item (tuple/list or dict with x/y-like keys)."""
    if isinstance(batch, dict):
        x = next((batch[k] for k in ("image", "images", "x", "input") if k in batch), None)
        y = next((batch[k] for k in ("label", "labels", "y", "target") if k in batch), None)
    elif isinstance(batch, list | tuple):
        x, y = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        x, y = batch, None
    if x is None:
        raise DataError(f"cannot find the images in a batch of type {type(batch).__name__}; yield (images, labels).")
    to_np = lambda t: t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)  # noqa: E731
    return to_np(x).astype(np.float32), (None if y is None else to_np(y))


def collect_images(loader: Iterable[Any], n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` (all when None) images and labels a dataloader yields, as numpy arrays."""
    xs, ys, count = [], [], 0
    for batch in loader:
        x, y = _as_numpy(batch)
        if x.ndim == 3:  # a dataset item, not a batch
            x, y = x[None], (None if y is None else np.asarray(y).reshape(1))
        xs.append(x)
        ys.append(np.zeros(len(x), dtype=np.int64) if y is None else np.asarray(y).reshape(-1))
        count += len(x)
        if n is not None and count >= n:
            break
    if not xs:
        raise DataError("the dataloader yielded no images; check the `data` config (paths, split sizes).")
    images, labels = np.concatenate(xs), np.concatenate(ys)
    return (images[:n], labels[:n]) if n is not None else (images, labels)


def calibration_images(data: Any, n: int) -> np.ndarray:
    """`n` normalised training images for calibration, at the data's current resolution: the data module's
    `calibration_batch(n)` (un-augmented images picked by a seeded permutation, the same on every run)."""
    if n <= 0:
        raise ConfigError(f"quantize.calibration_images = {n}: it must be a positive number of training images.")
    batch = data.calibration_batch(n, split="train")
    return np.ascontiguousarray(batch.detach().cpu().numpy() if hasattr(batch, "detach") else batch, np.float32)


def quantize_int8(
    float_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    images: np.ndarray,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    activation_type: str = "int8",
    batch_size: int = 32,
) -> Path:
    """Quantize the float ONNX at `float_path` into a QDQ int8 model at `int8_path` (written atomically)."""
    if calibrate_method not in CALIBRATION_METHODS:
        raise ConfigError(
            f"quantize.calibrate_method = {calibrate_method!r} is unknown; use one of {sorted(CALIBRATION_METHODS)}."
        )
    if activation_type not in ACTIVATION_TYPES:
        raise ConfigError(f"quantize.activation_type = {activation_type!r} is unknown; use one of int8, uint8.")
    int8_path = Path(int8_path)
    with atomic_path(int8_path, ".onnx") as tmp:
        prepared = tmp.with_suffix(".prepared.onnx")  # scratch: the shape-inferred float model
        try:
            # shape inference only: the float graph is already folded; ORT's own graph optimizations stay off so the
            # int8 file keeps one node per layer of the network
            quant_pre_process(str(float_path), str(prepared), skip_optimization=True, skip_symbolic_shape=False)
            quantize_static(
                str(prepared),
                str(tmp),
                ImageCalibrationReader(images, batch_size=batch_size),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=ACTIVATION_TYPES[activation_type],
                weight_type=QuantType.QInt8,
                calibrate_method=CALIBRATION_METHODS[calibrate_method],
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
            onnx.checker.check_model(str(tmp))
        finally:
            prepared.unlink(missing_ok=True)
    return int8_path


def onnx_accuracy(path: str | os.PathLike[str], images: np.ndarray, labels: np.ndarray, threads: int = 1) -> float:
    """Top-1 accuracy (0..1) of an ONNX classifier on the given images."""
    logits = run_onnx(session(path, threads), images)
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def torch_accuracy(model: Any, images: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy (0..1) of a PyTorch classifier on the given images (eval mode, no grad)."""
    import torch

    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            out = model(torch.from_numpy(images[i : i + batch_size]))
            correct += int((out.argmax(1).numpy() == labels[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(images))


def int8_flash_bytes(path: str | os.PathLike[str]) -> dict[str, int]:
    """Flash of a QDQ int8 model as TinyEngine counts it, from the tensors stored in the file.

    int8 weights (1 B each) + int32 biases (4 B each) + one 4-byte scale per output channel of each quantized
    weight; any weight left in float counts 4 B per value. Per-tensor activation scales and zero points (folded
    into the per-channel requantization multipliers on a device) are not counted.
    """
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    weights = biases = scales = floats = 0

    def stored(name: str) -> tuple[onnx.TensorProto | None, onnx.NodeProto | None]:
        node = producers.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in inits:
            return inits[node.input[0]], node
        return inits.get(name), None

    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        for pos, name in enumerate(node.input[1:3], start=1):
            tensor, dq = stored(name)
            if tensor is None:
                continue
            arr = numpy_helper.to_array(tensor)
            if arr.dtype in (np.int8, np.uint8):
                weights += arr.size
                scales += numpy_helper.to_array(inits[dq.input[1]]).size * 4 if dq is not None else 4
            elif arr.dtype == np.int32:
                biases += arr.size * 4
            elif pos == 2 and arr.dtype == np.float32:
                biases += arr.size * 4  # a float bias costs what an int32 one does
            else:
                floats += arr.size * arr.dtype.itemsize
    total = weights + biases + scales + floats
    return {
        "flash_bytes": total,
        "flash_weight_bytes": weights,
        "flash_bias_bytes": biases,
        "flash_scale_bytes": scales,
        "flash_float_bytes": floats,
    }


@dataclass(frozen=True)
class QuantizeSettings:
    """The `quantize:` config node."""

    calibration_images: int = 256
    calibrate_method: str = "minmax"
    per_channel: bool = True
    activation_type: str = "int8"
    opset: int = 17

    def __post_init__(self) -> None:
        if self.calibrate_method not in CALIBRATION_METHODS:
            raise ConfigError(
                f"quantize.calibrate_method = {self.calibrate_method!r} is unknown; use one of "
                f"{', '.join(sorted(CALIBRATION_METHODS))}."
            )
        if self.activation_type not in ACTIVATION_TYPES:
            raise ConfigError(f"quantize.activation_type = {self.activation_type!r} is unknown; use int8 or uint8.")
        if int(self.calibration_images) < 1:
            raise ConfigError(
                f"quantize.calibration_images = {self.calibration_images}: it must be a positive number of images."
            )

    @classmethod
    def from_cfg(cls, node: Any) -> QuantizeSettings:
        values = dict(node or {})
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(
                f"quantize: unknown key(s) {unknown}; the keys are {[f.name for f in fields(cls)]} "
                "(see conf/quantize/int8.yaml)."
            )
        return cls(**values)
