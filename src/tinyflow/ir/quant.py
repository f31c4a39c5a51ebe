"""Quantization carried by the IR: per-tensor or per-channel scales and zero points, for activations and weights.

An importer of a quantized model file (int8 QDQ ONNX, int8 TFLite) fills `Graph.quant`, keyed by tensor name:
an activation by the IR node that produces it (its name), a weight or bias by the name in `node.weights`. The
stored integer values of weights and biases go to `Graph.constants` under the same names, so nothing after the
import (firmware lowering, executors) reads the model file again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyflow.ir.model_errors import ModelImportError


class InvalidQuantizationError(ModelImportError):
    """A model file's quantization cannot be used (a scale that is zero, negative, NaN or infinite)."""


@dataclass(frozen=True)
class QuantParams:
    """real = scale · (q − zero_point); one entry for a per-tensor quantization, one per channel along `axis`
    (an axis of the IR's tensor layout, NCHW for activations, the weight's own layout for constants) else."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None
    dtype: str = "int8"  # the stored integer type: int8, int16, int32 (biases), uint8

    def __post_init__(self) -> None:
        if not self.scale or len(self.scale) != len(self.zero_point):
            raise ValueError(f"quantization: {len(self.scale)} scales and {len(self.zero_point)} zero points")
        bad = [s for s in self.scale if not (math.isfinite(s) and s > 0)]
        if bad:  # a scale of 0 divides by zero in every requantization; NaN passes every comparison
            raise InvalidQuantizationError(
                f"a quantization scale of {bad[0]!r}: scales must be finite and positive. The model file is "
                "damaged or was not quantized by a converter; quantize it again."
            )

    @classmethod
    def of(cls, scale: Any, zero_point: Any = 0, axis: int | None = None, dtype: str = "int8") -> QuantParams:
        """From scalars or arrays (a one-element array is per tensor)."""
        s = np.asarray(scale, np.float64).reshape(-1)
        z = np.broadcast_to(np.asarray(zero_point, np.int64).reshape(-1), s.shape)
        per_channel = s.size > 1
        return cls(tuple(float(v) for v in s), tuple(int(v) for v in z), axis if per_channel else None, str(dtype))

    @property
    def per_tensor(self) -> bool:
        return len(self.scale) == 1

    @property
    def scalar(self) -> tuple[float, int]:
        """(scale, zero point) of a per-tensor quantization."""
        if not self.per_tensor:
            raise ValueError(f"a per-channel quantization ({len(self.scale)} channels) has no single scale")
        return self.scale[0], self.zero_point[0]

    def scales(self) -> np.ndarray:
        return np.asarray(self.scale, np.float64)

    def zero_points(self) -> np.ndarray:
        return np.asarray(self.zero_point, np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"scale": list(self.scale), "zero_point": list(self.zero_point), "axis": self.axis, "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantParams:
        return cls(
            tuple(float(v) for v in d["scale"]),
            tuple(int(v) for v in d["zero_point"]),
            d.get("axis"),
            str(d.get("dtype", "int8")),
        )
