"""ReLU6 in place whose backward reads its output, so autograd keeps no copy of the input.

PyTorch's in-place `relu6_` is `hardtanh_`, whose derivative is written in terms of the *input*; to apply it in
place autograd first clones the input (the BatchNorm output it overwrites). In the supernet's sandwich step those
clones were 7–8 % of the step (`aten::clone` after every BatchNorm + ReLU6; torch.profiler, kernel phase at r48).
The gradient is the same read off the output: `hardtanh_backward` zeroes it where the value is ≤ 0 or ≥ 6, and the
input is ≤ 0 exactly where the output is 0 and ≥ 6 exactly where the output is 6 — so this function's gradient
equals PyTorch's to the bit (`tests/test_activation.py`), without the copy.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class _ReLU6InPlace(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.mark_dirty(x)
        out = F.hardtanh_(x, 0.0, 6.0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.hardtanh_backward(grad, out, 0.0, 6.0)


def relu6_(x: torch.Tensor) -> torch.Tensor:
    """`F.relu6(x, inplace=True)`, the same values and gradient; under autograd without cloning `x` first."""
    if x.requires_grad and torch.is_grad_enabled() and not torch.jit.is_tracing():
        return _ReLU6InPlace.apply(x)
    return F.relu6(x, inplace=True)
