"""`evaluate_accuracy` runs a channels-last copy with the BatchNorms folded: the same logits as the network as
trained, and the network itself untouched."""

from __future__ import annotations

import torch

from tiny_spaces import tiny_space
from tinyflow.nn.static import StaticNet
from tinyflow.training.evaluation import evaluate_accuracy, inference_forward, nhwc


def trained_net() -> StaticNet:
    torch.manual_seed(0)
    net = StaticNet(tiny_space(width_mult=0.5).max_arch())
    with torch.no_grad():
        for p in net.parameters():  # weights, BatchNorm scales and shifts far from their initial values
            p.add_(torch.randn_like(p) * 0.2)
        for _ in range(3):  # running statistics that are not the identity
            net(torch.randn(16, 1, 16, 16) * 2 + 0.5)
    return net.eval()


def test_inference_forward_computes_the_trained_network():
    net = trained_net()
    x = torch.randn(32, 1, 16, 16)
    with torch.no_grad():
        expected = net(x)
        got = inference_forward(net)(nhwc(x))
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)  # folded: equal up to float rounding


def test_evaluate_accuracy_leaves_the_network_as_it_was():
    net = trained_net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(40, 1, 16, 16), torch.randint(0, 10, (40,))
    loader = [(x[:20], y[:20]), (x[20:], y[20:])]
    acc = evaluate_accuracy(net, loader)
    assert net.training  # its mode, weights, running statistics and memory format as before
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.stem.conv.weight.is_contiguous()
    with torch.no_grad():
        net.eval()
        assert acc == int((net(x).argmax(1) == y).sum()) / len(y)
