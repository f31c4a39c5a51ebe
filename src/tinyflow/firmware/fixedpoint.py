"""TF Lite's fixed-point requantization (also CMSIS-NN's default, without CMSIS_NN_USE_SINGLE_ROUNDING).

A real multiplier M > 0 becomes (m, shift) with M ≈ m · 2^(shift − 31), m in [2^30, 2^31); applying it to an int32
is SaturatingRoundingDoublingHighMul followed by RoundingDivideByPOT. The NumPy functions here and the C in
`templates/tf_kernels.h` compute the same integers; one deviation from TF Lite, in both: a left shift that would
overflow int32 saturates (TF Lite leaves it undefined).
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(m, shift) of a real multiplier, as TF Lite's QuantizeMultiplier (round half away from zero)."""
    if real <= 0.0:
        return 0, 0
    q, e = math.frexp(real)
    m = math.floor(q * 2**31 + 0.5)
    if m == 2**31:
        m //= 2
        e += 1
    if e < -31:
        return 0, 0
    if e > 30:
        raise ValueError(f"requantization multiplier {real:g} is too large for int32 fixed point")
    return m, e


def srdhm(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul of int32 values (as int64 arrays); b is never INT32_MIN here."""
    ab = np.asarray(a, np.int64) * np.asarray(b, np.int64)
    q = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    return np.where(q >= 0, q >> 31, -((-q) >> 31))


def rdbpot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """RoundingDivideByPOT: x / 2^exponent rounded half away from zero."""
    x = np.asarray(x, np.int64)
    e = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def requantize(acc: np.ndarray, m: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
    """MultiplyByQuantizedMultiplier(acc, m, shift) over int64 arrays (broadcasting per channel)."""
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = np.clip(np.asarray(acc, np.int64) << left, INT32_MIN, INT32_MAX)
    return rdbpot(srdhm(shifted, m), right)


def requantize_single(acc: np.ndarray, m: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
    """One rounding (CMSIS-NN's CMSIS_NN_USE_SINGLE_ROUNDING): (acc·m + 2^(30−shift)) >> (31 − shift), half up.
    The pools use it: their small sums hit TF Lite's double rounding (high multiply, then divide) often."""
    total = 31 - np.asarray(shift, np.int64)
    prod = np.asarray(acc, np.int64) * np.asarray(m, np.int64)
    return (prod + (np.int64(1) << (total - 1))) >> total
