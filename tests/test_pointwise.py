"""`tinyflow.nn.pointwise.pointwise_conv`: a 1x1 convolution as a matrix product on channels-last maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tinyflow.nn.pointwise import MAX_PIXELS, pointwise_conv


@pytest.mark.parametrize("side", [1, 3, 6, 12, 16, 17])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("sliced", [False, True])
def test_pointwise_equals_conv2d_with_both_gradients(side: int, bias: bool, sliced: bool) -> None:
    g = torch.Generator().manual_seed(side)
    x = torch.randn(5, 12, side, side, dtype=torch.float64, generator=g).contiguous(memory_format=torch.channels_last)
    full = torch.randn(20, 16, 1, 1, dtype=torch.float64, generator=g)
    b = torch.randn(9 if sliced else 20, dtype=torch.float64, generator=g) if bias else None
    x.requires_grad_(True)
    full.requires_grad_(True)
    w = full[:9, :12] if sliced else full[:, :12]  # the elastic layers' prefix slices
    ours = pointwise_conv(x, w, b)
    theirs = F.conv2d(x, w, b)
    assert ours.shape == theirs.shape
    assert ours.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    g_out = torch.randn_like(theirs)
    grads = torch.autograd.grad(ours, (x, full), g_out)
    expected = torch.autograd.grad(theirs, (x, full), g_out)
    for a, e in zip(grads, expected):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_large_or_nchw_maps_keep_the_convolution() -> None:
    side = int(MAX_PIXELS**0.5) + 1
    w = torch.randn(4, 3, 1, 1)
    for x in (torch.randn(2, 3, side, side).contiguous(memory_format=torch.channels_last), torch.randn(2, 3, 5, 5)):
        out = pointwise_conv(x, w)
        assert torch.equal(out, F.conv2d(x, w))
        assert out.is_contiguous(memory_format=torch.channels_last) == x.is_contiguous(
            memory_format=torch.channels_last
        )
