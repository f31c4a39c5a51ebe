"""`tinyflow.nn.activation.relu6_`: PyTorch's in-place ReLU6 values and gradients to the bit, without its clone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from tinyflow.nn.activation import relu6_


class OpNames(TorchDispatchMode):
    """Records the aten ops that run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


def _bn_relu6_grads(act, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(seed)
    bn = torch.nn.BatchNorm2d(x.shape[1]).to(x.dtype)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 4.0)
        bn.bias.uniform_(-1.0, 5.0)  # outputs on both sides of 0 and of 6
    x = x.detach().clone().requires_grad_(True)
    y = act(bn(x))
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    return y.detach(), x.grad, bn.weight.grad, bn.bias.grad


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relu6_matches_pytorch_to_the_bit(channels_last: bool, dtype: torch.dtype) -> None:
    x = torch.randn(6, 5, 7, 7, dtype=dtype, generator=torch.Generator().manual_seed(1)) * 3
    x[0, 0, 0, :3] = torch.tensor([0.0, 6.0, -0.0], dtype=dtype)  # values exactly at the kinks
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours = _bn_relu6_grads(relu6_, x, seed=2)
    theirs = _bn_relu6_grads(lambda t: F.relu6(t, inplace=True), x, seed=2)
    assert ours[0].min() == 0 and ours[0].max() == 6  # both kinks are reached
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_relu6_does_not_clone_its_input() -> None:
    bn = torch.nn.BatchNorm2d(4)
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    for act, clones in ((lambda t: F.relu6(t, inplace=True), 1), (relu6_, 0)):
        ops = OpNames()
        with ops:
            act(bn(x)).sum().backward()
        assert ops.names.count("clone") == clones, ops.names


def test_relu6_without_grad_is_plain_inplace() -> None:
    x = torch.linspace(-3, 9, 13)
    with torch.no_grad():
        y = relu6_(x)
    assert y is x and torch.equal(x, F.relu6(torch.linspace(-3, 9, 13)))
