"""1×1 convolution of a channels-last tensor as one matrix product on its (N·H·W, C) view.

A channels-last (N, C, H, W) tensor is laid out as N·H·W rows of C channels, so a 1×1 convolution is a matrix
product with the (Cout, Cin) weight — no copy in, none out (the product's (N·H·W, Cout) rows are the result's
channels-last layout), and autograd's backward is two more products. On the supernet's small maps oneDNN's
convolution costs more than the product: forward + backward, 2 threads, 64 images, every pointwise layer of the
default supernet (w0.5, r48) 1.5–2.3× faster on 3 and 6 px maps (144→40 on 3 px 0.41 → 0.18 ms), 1.0–2.0× on
12 px; on 16 px 0.96–1.44×; on 24 and 32 px maps the product is mostly the slower (0.6–1.3×), so maps larger than
`MAX_PIXELS` keep oneDNN's convolution. The values agree to float rounding (`tests/test_pointwise.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# maps of at most 16 x 16 pixels go through the product (see above; timed on this project's 2-core host)
MAX_PIXELS = 256


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.conv2d(x, weight, bias)` for a (Cout, Cin, 1, 1) `weight` at stride 1; as a matrix product when `x` is
    channels-last and its map at most `MAX_PIXELS` (the result is channels-last too), else by `F.conv2d`."""
    n, c, h, w = x.shape
    if h * w > MAX_PIXELS or not x.is_contiguous(memory_format=torch.channels_last):
        return F.conv2d(x, weight, bias)
    rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    matrix = weight.reshape(weight.shape[0], c).t()
    out = rows @ matrix if bias is None else torch.addmm(bias, rows, matrix)
    return out.view(n, h, w, -1).permute(0, 3, 1, 2)
