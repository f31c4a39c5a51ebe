"""Depthwise convolution whose weight gradient is computed as one grouped forward convolution.

On CPU, PyTorch's depthwise weight gradient (oneDNN, channels-last or not) is fast for 3×3 kernels but 4–6× slower
than the forward pass for 5×5 and 7×7 ones: in the OFA sandwich step at the default setting the 7×7 weight
gradients alone were the largest single cost of training. The same gradient is a correlation of each channel's
input with its output gradient, summed over the batch:

    dW[c, i, j] = Σ_n Σ_h,w  x_pad[n, c, s·h + i, s·w + j] · g[n, c, h, w]

i.e. a depthwise convolution of the input (batch folded into channels, N·C groups) with the output gradient as its
kernel (dilated by the stride), then a sum over the batch. oneDNN runs that 1.1–3.7× faster than its own weight
gradient for k ≥ 5 on the default space's 4–16 px maps (`benchmarks/bench_depthwise.py`). On larger or tiny
maps, and for 3×3 kernels, PyTorch's own gradient is the faster one and stays.

A kernel wider than its input map is cropped first (`visible_kernel`): at stride 1 with padding k // 2 the taps
more than side − 1 from the centre only ever meet the zero padding, so a 7×7 kernel on a 3×3 map (the last stages
of a 48 px input) computes what its centre 5×5 computes, and on a 2×2 map what its centre 3×3 does. The cropped-off
taps' gradient is zero either way. On 64 images × 288 channels of 3 px, oneDNN's weight gradient took 3.4 ms for
the 7×7 kernel and 2.3 ms cropped to 5×5; a 240-channel layer on 2 px maps, forward and backward, 1.4–1.75 ms
whole and 0.66–0.98 ms cropped to 3×3 (2 threads; `benchmarks/bench_exact_speedups.py` times the whole step).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# where the grouped form pays (benchmarks/bench_depthwise.py, 2 threads): kernels of 5 and 7 on inputs of 4 to 16
# pixels a side; on 24-32 px maps oneDNN's own gradient is faster (PyTorch ÷ grouped 0.4-0.6 at stride 2), and
# on 2-3 px maps the 7x7 case is 4x slower grouped
MIN_KERNEL = 5
SIDES = (4, 16)


def visible_kernel(weight: torch.Tensor, side: tuple[int, int], stride: int) -> tuple[torch.Tensor, list[int]]:
    """`weight` (…, kh, kw; odd, padding k // 2) cropped to the taps that can reach a `side` (h, w) input at
    `stride`, and the padding that goes with the crop: the same convolution, up to float rounding. Only stride 1
    is cropped (a stride-2 kernel's reach is not centred)."""
    kh, kw = weight.shape[-2:]
    ch, cw = (kh, kw) if stride != 1 else (min(kh, 2 * side[0] - 1), min(kw, 2 * side[1] - 1))
    if (ch, cw) != (kh, kw):
        top, left = (kh - ch) // 2, (kw - cw) // 2
        weight = weight[..., top : top + ch, left : left + cw]
    return weight, [ch // 2, cw // 2]


def depthwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """The gradient of a depthwise conv's (C, 1, k, k) weight from its input `x` and output gradient `grad_out`
    (padding k // 2), as one grouped forward convolution over batch × channels."""
    n, c, h, w = x.shape
    ho, wo = grad_out.shape[2:]
    inputs = x.contiguous().reshape(1, n * c, h, w)
    kernels = grad_out.contiguous().reshape(n * c, 1, ho, wo)
    out = F.conv2d(inputs, kernels, None, 1, kernel // 2, stride, n * c)
    return out[..., :kernel, :kernel].reshape(n, c, kernel, kernel).sum(0).unsqueeze(1)


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        k = weight.shape[-1]
        return F.conv2d(x, weight, None, stride, k // 2, 1, x.shape[1])

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, weight = ctx.saved_tensors
        s, k = ctx.stride, weight.shape[-1]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            pad, groups = [k // 2, k // 2], x.shape[1]
            mask = [True, False, False]  # the input's gradient only
            conv_backward = torch.ops.aten.convolution_backward
            grad_x = conv_backward(grad_out, x, weight, None, [s, s], pad, [1, 1], False, [0, 0], groups, mask)[0]
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(x, grad_out, k, s)
        return grad_x, grad_w, None


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """`F.conv2d(x, weight, None, stride, k // 2, groups=C)` for a (C, 1, k, k) weight, cropped to the taps that
    reach `x` (`visible_kernel`); under autograd with k ≥ 5 on inputs of 4 to 16 pixels a side, its weight
    gradient comes from `depthwise_weight_grad`."""
    sides = x.shape[-2:]
    weight, padding = visible_kernel(weight, (sides[0], sides[1]), stride)
    kh, kw = weight.shape[-2:]
    grouped = kh == kw >= MIN_KERNEL and SIDES[0] <= min(sides) and max(sides) <= SIDES[1]
    if grouped and torch.is_grad_enabled() and weight.requires_grad:
        return _DepthwiseConv.apply(x, weight, stride)
    return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])


def folded_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, groups: int
) -> torch.Tensor:
    """Inference of a conv with 'same' padding (k // 2) and a folded bias, cropped to the taps that reach `x`."""
    weight, padding = visible_kernel(weight, (x.shape[-2], x.shape[-1]), stride)
    return F.conv2d(x, weight, bias, stride, padding, 1, groups)
