"""(q − zero_point) · scale for a quantized constant, per tensor or per channel (NumPy only)."""

from __future__ import annotations

import numpy as np


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int) -> np.ndarray:
    """(q - zero_point) · scale, per channel along `axis` when there are several scales. A negative axis counts
    from the end (ONNX); an axis past the tensor's rank, as converters write for a depthwise's 1-D bias, means its
    last axis."""
    q = np.asarray(q, np.float64)
    scale = np.asarray(scale, np.float64)
    zp = np.asarray(zero_point if zero_point is not None else [0], np.float64)
    if scale.size == 1 or q.ndim == 0:
        return (q - zp.reshape(-1)[0]) * float(scale.reshape(-1)[0])
    axis = axis % q.ndim if axis < 0 else min(axis, q.ndim - 1)
    shape = [1] * q.ndim
    shape[axis] = -1
    zp = zp.reshape(shape) if zp.size > 1 else zp.reshape(-1)[0]
    return (q - zp) * scale.reshape(shape)
