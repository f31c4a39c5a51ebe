"""The depthwise weight gradient as a grouped forward conv, and BatchNorm folded into a subnet's evaluation: the
same functions as PyTorch's own, to rounding."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F

from tinyflow.arch.space import MBConvSpace
from tinyflow.nn import depthwise
from tinyflow.nn.calibration import recalibrate_bn
from tinyflow.nn.depthwise import depthwise_conv, depthwise_weight_grad, folded_conv, visible_kernel
from tinyflow.nn.elastic import ElasticSupernet
from tinyflow.nn.static import ConvBNAct

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(("n", "c", "side", "kernel", "stride"), [(2, 3, 10, 7, 1), (2, 3, 9, 5, 2), (1, 2, 8, 7, 2)])
def test_depthwise_gradients_match_autograd_numerically(n, c, side, kernel, stride):
    torch.manual_seed(0)
    x = torch.randn(n, c, side, side, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, 1, kernel, kernel, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: depthwise_conv(a, b, stride), (x.requires_grad_(), w.requires_grad_()))


def test_weight_grad_equals_pytorchs_own():
    torch.manual_seed(1)
    x = torch.randn(8, 24, 12, 12).contiguous(memory_format=torch.channels_last)
    w = torch.randn(24, 1, 7, 7)
    for stride in (1, 2):
        g = torch.randn_like(F.conv2d(x, w, None, stride, 3, 1, 24))
        ref = torch.ops.aten.convolution_backward(
            g, x, w, None, [stride] * 2, [3, 3], [1, 1], False, [0, 0], 24, [False, True, False]
        )[1]
        torch.testing.assert_close(depthwise_weight_grad(x, g, 7, stride), ref, rtol=1e-4, atol=1e-3)


def test_small_kernels_and_tiny_maps_keep_the_native_gradient():
    for kernel, side in ((3, 8), (7, 3), (7, 24)):
        x = torch.randn(2, 4, side, side)
        w = torch.randn(4, 1, kernel, kernel, requires_grad=True)
        assert depthwise_conv(x, w, 1).grad_fn.name() != "_DepthwiseConvBackward"
    w = torch.randn(4, 1, 7, 7, requires_grad=True)
    assert depthwise_conv(torch.randn(2, 4, 8, 8), w, 1).grad_fn.name() == "_DepthwiseConvBackward"
    assert depthwise.MIN_KERNEL == 5


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize(("h", "w"), [(1, 1), (2, 2), (3, 3), (4, 4), (2, 5), (3, 6)])
def test_a_kernel_cropped_to_its_map_is_the_same_convolution(h, w, kernel, stride):
    torch.manual_seed(4)
    x = torch.randn(3, 5, h, w, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    wt = torch.randn(5, 1, kernel, kernel, dtype=torch.float64)
    x1, w1 = x.clone().requires_grad_(), wt.clone().requires_grad_()
    x2, w2 = x.clone().requires_grad_(), wt.clone().requires_grad_()
    ours = depthwise_conv(x1, w1, stride)
    ref = F.conv2d(x2, w2, None, stride, kernel // 2, 1, 5)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    ours.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(w1.grad, w2.grad)


def test_the_crop_keeps_the_taps_that_reach_the_map():
    wt = torch.arange(49.0).reshape(1, 1, 7, 7)
    cropped, padding = visible_kernel(wt, (3, 3), 1)
    assert cropped.shape[-2:] == (5, 5) and padding == [2, 2]
    assert torch.equal(cropped, wt[..., 1:6, 1:6])
    assert visible_kernel(wt, (2, 5), 1)[0].shape[-2:] == (3, 7)
    assert visible_kernel(wt, (4, 4), 1)[0] is wt  # 2·4 − 1 = 7: nothing to crop
    assert visible_kernel(wt, (2, 2), 2)[0] is wt  # stride 2: left whole
    # the outer ring never meets the map: its gradient is exactly zero, as PyTorch's own
    w = wt.clone().requires_grad_()
    depthwise_conv(torch.randn(2, 1, 3, 3), w, 1).sum().backward()
    ring = torch.ones(7, 7, dtype=torch.bool)
    ring[1:6, 1:6] = False
    assert torch.all(w.grad[0, 0][ring] == 0)


@pytest.mark.parametrize(("h", "w", "groups"), [(3, 3, 1), (2, 5, 2), (6, 6, 4)])
def test_folded_conv_is_the_same_padded_convolution(h, w, groups):
    torch.manual_seed(5)
    x = torch.randn(2, 4, h, w, dtype=torch.float64)
    wt = torch.randn(8, 4 // groups, 7, 7, dtype=torch.float64)
    b = torch.randn(8, dtype=torch.float64)
    for stride in (1, 2):
        ref = F.conv2d(x, wt, b, stride, 3, 1, groups)
        torch.testing.assert_close(folded_conv(x, wt, b, stride, groups), ref)


def test_static_depthwise_layer_trains_to_the_same_gradients():
    torch.manual_seed(2)
    layer = ConvBNAct(16, 16, 5, stride=2, groups=16)
    native = copy.deepcopy(layer)
    x = torch.randn(4, 16, 16, 16)
    layer(x).square().sum().backward()
    torch.nn.Sequential.forward(native, x).square().sum().backward()  # PyTorch's own modules, one by one
    torch.testing.assert_close(layer.conv.weight.grad, native.conv.weight.grad, rtol=1e-4, atol=1e-4)


def test_subnet_evaluation_with_folded_batchnorm_matches_the_unfolded_one():
    space = MBConvSpace(width_mult=0.35, resolution=32, num_classes=10, in_channels=1)
    torch.manual_seed(3)
    net = ElasticSupernet(space).to(memory_format=torch.channels_last)
    arch = net.sample(random.Random(0))
    net.set_active(arch)
    batches = [torch.randn(16, 1, 32, 32) for _ in range(2)]
    recalibrate_bn(net, batches)
    x = torch.randn(8, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    net.eval()
    with torch.no_grad():
        folded = net(x)
        unfolded = _unfolded_forward(net, x)
    torch.testing.assert_close(folded, unfolded, rtol=1e-4, atol=1e-4)
    # and the subnet as its own plain network, recalibrated on the same batches (the statistics the fold reads
    # were estimated with the BatchNorms applied, not folded)
    static = net.extract(arch)
    recalibrate_bn(static, batches)
    with torch.no_grad():
        torch.testing.assert_close(folded, static.eval()(x.contiguous()), rtol=1e-4, atol=1e-4)


def _unfolded_forward(net: ElasticSupernet, x: torch.Tensor) -> torch.Tensor:
    """The network with each elastic block's BatchNorms applied as BatchNorms (running statistics)."""
    from tinyflow.nn.elastic import ElasticMBConv

    blocks = [m for m in net.modules() if isinstance(m, ElasticMBConv)]
    saved = {b: b.forward for b in blocks}
    try:
        for b in blocks:
            b.forward = _bn_forward.__get__(b)
        return net(x)
    finally:
        for b, f in saved.items():
            b.forward = f


def _bn_forward(self, x: torch.Tensor) -> torch.Tensor:
    y = x
    if self.active_expand != 1:
        y = F.relu6(self.expand_bn(self.expand_conv(x)))
    y = F.relu6(self.dw_bn(self.dw(y)))
    y = self.project_bn(self.project_conv(y))
    return x + y if self.residual else y
