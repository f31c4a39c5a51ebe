"""The NumPy oracle: exactly the integer arithmetic of the generated C, vectorised over a batch of images.

Every tensor is int8 NHWC, shape (N, H, W, C) (a flat tensor is (N, 1, 1, F)); accumulators are int64 here and
int32 in C (they never exceed int32 for int8 layers of these sizes). The firmware's output must equal this bit for
bit; that is what `bit_exact` counts. Each firmware layer kind's oracle is a function here named after the kind,
declared in `tinyflow.ir.op_registry` (a kind of its own module declares its oracle there); `run_layer` dispatches.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tinyflow.firmware.fixedpoint import requantize, requantize_single
from tinyflow.firmware.qmodel import ADD_LEFT_SHIFT, SOFTMAX_BITS, QLayer, QModel, hwc
from tinyflow.firmware.rnnpool_float import run_rnnpool
from tinyflow.ir.op_registry import layer_part
from tinyflow.ir.ops import IRError

ROUNDING = {"tflite": requantize, "single": requantize_single}


def _finish(acc: np.ndarray, p: dict, lo: int | None = None, hi: int | None = None) -> np.ndarray:
    out = ROUNDING[p.get("rounding", "tflite")](acc, p["mult"], p["shift"]) + p["zp_out"]
    lo = p.get("act_min", -128) if lo is None else lo
    hi = p.get("act_max", 127) if hi is None else hi
    return np.clip(out, lo, hi).astype(np.int8)


def _pad(x: np.ndarray, pad: tuple[int, int, int, int], value: int) -> np.ndarray:
    t, left, b, r = pad
    return np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """(N, Ho, Wo, C, kh, kw) windows of a padded NHWC map."""
    win = sliding_window_view(x, kernel, axis=(1, 2))
    return win[:, :: stride[0], :: stride[1]][:, : out_hw[0], : out_hw[1]]


def run_layer(layer: QLayer, xs: list[np.ndarray]) -> np.ndarray:
    """One layer over a batch: the oracle its kind declares (`tinyflow.ir.op_registry`)."""
    try:
        oracle = layer_part(layer.kind, "oracle")
    except IRError as exc:
        raise ValueError(f"no oracle for layer '{layer.name}': {exc}") from None
    return oracle(layer, xs)


def pointwise(layer: QLayer, xs: list[np.ndarray]) -> np.ndarray:
    p = layer.p
    return _finish(xs[0].astype(np.int64) @ p["weight"].astype(np.int64).T + p["bias"], p)


def linear(layer: QLayer, xs: list[np.ndarray]) -> np.ndarray:
    p, x = layer.p, xs[0].astype(np.int64)
    flat = x.reshape(len(x), -1)
    return _finish((flat @ p["weight"].astype(np.int64).T + p["bias"]).reshape(len(x), 1, 1, -1), p)


def depthwise(layer: QLayer, xs: list[np.ndarray]) -> np.ndarray:
    p, (ho, wo, _) = layer.p, hwc(layer.out_shape)
    win = _windows(_pad(xs[0].astype(np.int64), p["pad"], p["zp_in"]), p["kernel"], p["stride"], (ho, wo))
    w = p["weight"].astype(np.int64).reshape(-1, *p["kernel"])  # (C, kh, kw)
    return _finish(np.einsum("nhwcyx,cyx->nhwc", win, w) + p["bias"], p)


def conv(layer: QLayer, xs: list[np.ndarray]) -> np.ndarray:
    """Padding holds zp_in; the bias has −zp_in·Σw folded in."""
    p, (ho, wo, _) = layer.p, hwc(layer.out_shape)
    win = _windows(_pad(xs[0].astype(np.int64), p["pad"], p["zp_in"]), p["kernel"], p["stride"], (ho, wo))
    w = p["weight"].astype(np.int64)  # (O, kh, kw, I)
    return _finish(np.einsum("nhwcyx,oyxc->nhwo", win, w) + p["bias"], p)


def mean_constants(p: dict) -> tuple[int, int]:
    """The global average pool's (multiplier, shift) under the layer's rounding: TF Lite's integer mean for
    `tflite`, one rounding of s_in/(s_out·n) for `single` (and for a model whose rounding was never set)."""
    if p.get("rounding") == "tflite" and "tfl_mult" in p:
        return p["tfl_mult"], p["tfl_shift"]
    return p["mult"], p["shift"]


def global_avgpool(layer: QLayer, xs: list[np.ndarray]) -> np.ndarray:
    p = layer.p
    acc = (xs[0].astype(np.int64) - p["zp_in"]).sum(axis=(1, 2), keepdims=True)
    m, s = mean_constants(p)
    out = ROUNDING[p.get("rounding", "single")](acc, m, s) + p["zp_out"]
    return np.clip(out, p.get("act_min", -128), p.get("act_max", 127)).astype(np.int8)


def tflite_avgpool(p: dict) -> bool:
    """Whether the average pool runs TF Lite's integer division (rounding=tflite, equal in/out quantization)."""
    return bool(p.get("tfl_div")) and p.get("rounding") == "tflite"


def round_div(acc: np.ndarray, count: np.ndarray) -> np.ndarray:
    """acc / count rounded half away from zero, as C's truncating division of acc ± count/2."""
    half = count // 2
    return np.where(acc > 0, (acc + half) // count, -((half - acc) // count))


def avgpool(layer: QLayer, xs: list[np.ndarray]) -> np.ndarray:
    p, x, (ho, wo, _) = layer.p, xs[0].astype(np.int64), hwc(layer.out_shape)
    win = _windows(_pad(x - p["zp_in"], p["pad"], 0), p["kernel"], p["stride"], (ho, wo))
    ones = np.ones((1, *x.shape[1:3], 1), np.int64)
    count = _windows(_pad(ones, p["pad"], 0), p["kernel"], p["stride"], (ho, wo)).sum(axis=(-1, -2))
    idx = np.broadcast_to(count - 1, win.shape[:4])
    acc = win.sum(axis=(-1, -2))
    if tflite_avgpool(p):
        cnt = np.broadcast_to(count, win.shape[:4])
        out = round_div(acc + cnt * p["zp_in"], cnt)
    else:
        out = requantize_single(acc, p["mult"][idx], p["shift"][idx]) + p["zp_out"]
    return np.clip(out, p.get("act_min", -128), p.get("act_max", 127)).astype(np.int8)


def maxpool(layer: QLayer, xs: list[np.ndarray]) -> np.ndarray:
    p, (ho, wo, _) = layer.p, hwc(layer.out_shape)
    win = _windows(_pad(xs[0].astype(np.int64), p["pad"], -(1 << 20)), p["kernel"], p["stride"], (ho, wo))
    return _finish(win.max(axis=(-1, -2)) - p["zp_in"], p, -128, 127)


def act(layer: QLayer, xs: list[np.ndarray]) -> np.ndarray:
    return _finish(xs[0].astype(np.int64) - layer.p["zp_in"], layer.p)


def add(layer: QLayer, xs: list[np.ndarray]) -> np.ndarray:
    p, x, y = layer.p, xs[0].astype(np.int64), xs[1].astype(np.int64)
    rq = ROUNDING[p.get("rounding", "tflite")]
    a = rq((x - p["zp1"]) << ADD_LEFT_SHIFT, p["m1"], p["sh1"])
    b = rq((y - p["zp2"]) << ADD_LEFT_SHIFT, p["m2"], p["sh2"])
    out = rq(a + b, p["mo"], p["sho"]) + p["zp_out"]
    return np.clip(out, -128, 127).astype(np.int8)


def softmax(layer: QLayer, xs: list[np.ndarray]) -> np.ndarray:
    p, x = layer.p, xs[0].astype(np.int64)
    flat = x.reshape(len(x), -1)
    e = p["table"].astype(np.int64)[flat.max(axis=1, keepdims=True) - flat]
    total = e.sum(axis=1, keepdims=True)
    bits = SOFTMAX_BITS
    q = (e * p["inv"] + (total << (bits - 1))) // (total << bits) + p["zp_out"]
    return np.clip(q, -128, 127).astype(np.int8).reshape(len(x), 1, 1, -1)


def rnnpool(layer: QLayer, xs: list[np.ndarray]) -> np.ndarray:
    """Float32 on the FPU, as the firmware computes it."""
    return run_rnnpool(layer.p, xs[0])


def view(layer: QLayer, xs: list[np.ndarray]) -> np.ndarray:
    return xs[0].reshape(len(xs[0]), *hwc(layer.out_shape))


def run_oracle(model: QModel, x_nhwc: np.ndarray, keep: bool = False) -> np.ndarray | dict[str, np.ndarray]:
    """The int8 output (N, H, W, C) for int8 NHWC inputs; every tensor by name with `keep`."""
    n = len(x_nhwc)
    values: dict[str, np.ndarray] = {model.input_name: np.asarray(x_nhwc, np.int8).reshape(n, *hwc(model.input_shape))}
    for layer in model.layers:
        values[layer.name] = run_layer(layer, [values[i] for i in layer.inputs])
    return values if keep else values[model.output_name]
