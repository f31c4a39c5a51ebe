"""RNNPool in float32 with NumPy, operation for operation as `templates/tf_rnnpool.h` computes it on the FPU.

The firmware runs the RNNPool stem in float32 (the rest of the network is int8). So that the NumPy oracle equals
the C bit for bit, both use only IEEE-754 float32 +, −, ×, ÷ in the same order (GCC in ISO C mode does not fuse
a multiply and an add): matrix–vector products accumulate from 0 over the input index, one element at a time;
exp is a Cody–Waite range reduction, a degree-6 Taylor polynomial in Horner form and a scale by 2^k built from its
bits (no libm, whose exp differs from NumPy's); sigmoid(x) = 1 / (1 + exp(−x)), tanh(x) = 2·sigmoid(2x) − 1. The
output is quantized as ONNX QuantizeLinear does (x / scale, round half to even, + zero point, saturate).
"""

from __future__ import annotations

from typing import Any

import numpy as np

F32 = np.float32
EXP_LO, EXP_HI = F32(-87.0), F32(88.0)  # exp's input range: 2^k stays a normal float32
LOG2E = F32(float.fromhex("0x1.715476p+0"))  # the C literals, exactly
LN2_HI, LN2_LO = F32(float.fromhex("0x1.63p-1")), F32(float.fromhex("-0x1.bd0106p-13"))  # k·LN2_HI is exact
# 1/720, 1/120, 1/24, 1/6 as float32 quotients (what C's 1.0f / 720.0f folds to), 1/2, 1, 1: Horner, highest first
EXP_POLY = (*(F32(1.0) / F32(d) for d in (720.0, 120.0, 24.0, 6.0)), F32(0.5), F32(1.0), F32(1.0))
QUANT_CLAMP = F32(256.0)  # |x / scale| beyond this saturates anyway; keeps the C rounding trick exact


def exp_f32(x: np.ndarray) -> np.ndarray:
    """exp(x) in float32 ops only (relative error about 2e-7 on [-87, 88])."""
    x = np.minimum(np.maximum(np.asarray(x, F32), EXP_LO), EXP_HI)
    k = np.floor(x * LOG2E + F32(0.5))
    r = (x - k * LN2_HI) - k * LN2_LO
    p = np.full_like(r, EXP_POLY[0])
    for c in EXP_POLY[1:]:
        p = p * r + c
    scale = ((k.astype(np.int32) + 127) << 23).astype(np.uint32).view(F32)
    return p * scale


def sigmoid_f32(x: np.ndarray) -> np.ndarray:
    return F32(1.0) / (F32(1.0) + exp_f32(-x))


def tanh_f32(x: np.ndarray) -> np.ndarray:
    return F32(2.0) * sigmoid_f32(F32(2.0) * x) - F32(1.0)


def matvec(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(B, in) × W (out, in) -> (B, out), summed from 0 over `in` in order (the C loop's order)."""
    acc = np.zeros((x.shape[0], w.shape[0]), F32)
    for k in range(w.shape[1]):
        acc = acc + w[:, k][None, :] * x[:, k : k + 1]
    return acc


def cell_final_state(cell: dict[str, Any], seqs: np.ndarray) -> np.ndarray:
    """Run one RNN cell over (B, steps, in) sequences from a zero state; the final state (B, hidden)."""
    h_size = cell["hidden"]
    h = np.zeros((seqs.shape[0], h_size), F32)
    for t in range(seqs.shape[1]):
        xw = matvec(cell["w"], seqs[:, t])
        hu = matvec(cell["u"], h)
        if cell["cell"] == "fastgrnn":
            pre = xw + hu
            z = sigmoid_f32(pre + cell["b_z"])
            h_tilde = tanh_f32(pre + cell["b_h"])
            h = (cell["zeta"] * (F32(1.0) - z) + cell["nu"]) * h_tilde + z * h
        else:
            xw = xw + cell["b_i"]
            hu = hu + cell["b_h"]
            r = sigmoid_f32(xw[:, :h_size] + hu[:, :h_size])
            z = sigmoid_f32(xw[:, h_size : 2 * h_size] + hu[:, h_size : 2 * h_size])
            n = tanh_f32(xw[:, 2 * h_size :] + r * hu[:, 2 * h_size :])
            h = (F32(1.0) - z) * n + z * h
    return h


def pool_patches(p: dict[str, Any], patches: np.ndarray) -> np.ndarray:
    """(B, r, c, f) float32 patches -> (B, 4·h2): RNN1 over rows and columns, RNN2 both ways over the summaries."""
    b, r, c, f = patches.shape
    rows = cell_final_state(p["rnn1"], patches.reshape(b * r, c, f)).reshape(b, r, -1)
    cols = cell_final_state(p["rnn1"], patches.transpose(0, 2, 1, 3).reshape(b * c, r, f)).reshape(b, c, -1)
    outs = [
        cell_final_state(p["rnn2"], seq) for seq in (rows, rows[:, ::-1], cols, cols[:, ::-1])
    ]  # [rows→, rows←, cols→, cols←]
    return np.concatenate(outs, axis=1)


def quantize(v: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """QuantizeLinear in float32: round(v / scale) half to even, + zp, saturated to int8."""
    y = np.minimum(np.maximum(np.asarray(v, F32) / F32(scale), -QUANT_CLAMP), QUANT_CLAMP)
    return np.clip(np.rint(y).astype(np.int32) + zp, -128, 127).astype(np.int8)


def run_rnnpool(p: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """int8 NHWC stem output (N, H, W, f) -> int8 NHWC pooled output (N, Ho, Wo, 4·h2), as the firmware does it
    patch by patch: outside the stem map the patch holds the stem's zero point (float 0, RNNPool's padding)."""
    (r, c), (sr, sc), (pr, pc) = p["patch"], p["stride"], p["padding"]
    ho, wo = p["pooled_hw"]
    n, h, w, f = x.shape
    padded = np.full((n, h + 2 * pr + r, w + 2 * pc + c, f), p["zp_in"], np.int8)
    padded[:, pr : pr + h, pc : pc + w] = x
    rows = (np.arange(ho) * sr)[:, None] + np.arange(r)  # (Ho, r) in padded coordinates
    cols = (np.arange(wo) * sc)[:, None] + np.arange(c)
    q = padded[:, rows[:, None, :, None], cols[None, :, None, :]]  # (N, Ho, Wo, r, c, f)
    xf = (q.astype(np.int32) - p["zp_in"]).astype(F32) * F32(p["scale_in"])
    pooled = pool_patches(p, xf.reshape(n * ho * wo, r, c, f))
    return quantize(pooled, p["scale_out"], p["zp_out"]).reshape(n, ho, wo, -1)
