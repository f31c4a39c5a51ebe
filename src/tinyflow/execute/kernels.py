"""PyTorch kernels for IR nodes, each written as a *valid* op on an already padded input.

Each op kind's kernel is `run_<op>(node, xs, conv, pads)`, declared as that kind's executor in
`tinyflow.ir.op_registry`; `run_valid` dispatches through the registry.

Layer execution pads a tensor by the node's own padding, then runs the kernel; patch execution pads a patch
only where it touches the feature map's border (see `tinyflow.memory.receptive_field`), then runs the same
kernel — so both modes run identical arithmetic on identical values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tinyflow.errors import ConfigError
from tinyflow.ir.graph import Node
from tinyflow.ir.op_registry import op_part
from tinyflow.ir.ops import IRError

Pads = tuple[int, int, int, int]  # (top, bottom, left, right)


def activation(x: torch.Tensor, fn: str | None, params: dict[str, Any] | None = None) -> torch.Tensor:
    """Apply a (fused or stand-alone) activation by name; `params` are the IR's `act_params`."""
    params = params or {}
    if fn is None or fn == "identity":
        return x
    if fn == "relu":
        return F.relu(x)
    if fn == "relu6":
        return F.hardtanh(x, 0.0, 6.0)
    if fn == "clip":
        return torch.clamp(x, min=params.get("min"), max=params.get("max"))
    if fn == "hardswish":
        return F.hardswish(x)
    if fn == "hardsigmoid":
        return torch.clamp(x * params.get("alpha", 0.2) + params.get("beta", 0.5), 0.0, 1.0)
    if fn == "sigmoid":
        return torch.sigmoid(x)
    if fn == "tanh":
        return torch.tanh(x)
    if fn == "relu_n1_to_1":
        return torch.clamp(x, -1.0, 1.0)
    if fn == "leakyrelu":
        return F.leaky_relu(x, params.get("alpha", 0.01))
    raise ConfigError(
        f"executor: activation '{fn}' is not supported; supported: relu, relu6, relu_n1_to_1, clip, hardswish, "
        "hardsigmoid, sigmoid, tanh, leakyrelu, softmax"
    )


@dataclass
class ConvParams:
    """A conv's / linear's weights with BatchNorm already folded in (linear: (out, in)); for a batchnorm node the
    per-channel scale and shift; for an `add_const` / `mul_const` node the constant operand (`weight`)."""

    weight: torch.Tensor
    bias: torch.Tensor | None


def node_padding(node: Node) -> tuple[int, int, int, int]:
    """The node's own padding as (top, bottom, left, right)."""
    pt, pl, pb, pr = node.attrs.get("padding", (0, 0, 0, 0))
    return (pt, pb, pl, pr)


def pad(x: torch.Tensor, pads: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    """Pad (top, bottom, left, right) of an NCHW tensor."""
    top, bottom, left, right = pads
    if not (top or bottom or left or right):
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def run_valid(
    node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: tuple[int, int, int, int] = (0, 0, 0, 0)
) -> torch.Tensor:
    """Run `node` on inputs `xs`, the first padded by `pads` (top, bottom, left, right) and no more: the executor
    kernel its op kind declares (`tinyflow.ir.op_registry`)."""
    try:
        kernel = op_part(node.op, "executor")
    except IRError as exc:
        raise ConfigError(f"executor: node '{node.name}' cannot run in the PyTorch executor: {exc}") from None
    return kernel(node, xs, conv, pads)


def _act(y: torch.Tensor, node: Node) -> torch.Tensor:
    return activation(y, node.attrs.get("act"), node.attrs.get("act_params"))


def run_conv2d(node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: Pads) -> torch.Tensor:
    assert conv is not None
    a = node.attrs
    y = F.conv2d(
        pad(xs[0], pads),
        conv.weight,
        conv.bias,
        tuple(a.get("stride", (1, 1))),
        0,
        tuple(a.get("dilation", (1, 1))),
        a.get("groups", 1),
    )
    return _act(y, node)


def run_maxpool(node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: Pads) -> torch.Tensor:
    a = node.attrs
    y = F.max_pool2d(pad(xs[0], pads, float("-inf")), tuple(a["kernel"]), tuple(a.get("stride", a["kernel"])))
    return _act(y, node)


def run_avgpool(node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: Pads) -> torch.Tensor:
    a = node.attrs
    k, s = tuple(a["kernel"]), tuple(a.get("stride", a["kernel"]))
    total = F.avg_pool2d(pad(xs[0], pads), k, s, divisor_override=1)
    if a.get("count_include_pad", False):
        return _act(total / (k[0] * k[1]), node)
    # border cells do not count: divide by the number of real cells under each window
    ones = pad(torch.ones_like(xs[0][:1, :1]), pads)
    return _act(total / F.avg_pool2d(ones, k, s, divisor_override=1), node)


def run_act(node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: Pads) -> torch.Tensor:
    a = node.attrs
    if a.get("fn") in ("add_const", "mul_const"):
        assert conv is not None  # the constant operand, broadcast NumPy-style
        y = xs[0] + conv.weight if a["fn"] == "add_const" else xs[0] * conv.weight
        return activation(y, a.get("then"))
    if a.get("fn") == "softmax":
        beta = (a.get("act_params") or {}).get("beta", 1.0)
        return torch.softmax(xs[0] * beta, dim=a.get("axis", -1))
    return activation(xs[0], a.get("fn"), a.get("act_params"))


def run_batchnorm(node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: Pads) -> torch.Tensor:
    assert conv is not None  # folded into a per-channel scale (weight) and shift (bias)
    shape = (1, -1) + (1,) * (xs[0].dim() - 2)
    return xs[0] * conv.weight.view(shape) + conv.bias.view(shape)


def run_add(node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: Pads) -> torch.Tensor:
    y = xs[0]
    for other in xs[1:]:
        y = y + other
    return activation(y, node.attrs.get("act"))


def run_mul(node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: Pads) -> torch.Tensor:
    y = xs[0]
    for other in xs[1:]:
        y = y * other
    return activation(y, node.attrs.get("act"))


def run_concat(node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: Pads) -> torch.Tensor:
    return activation(torch.cat(xs, dim=node.attrs.get("axis", 1)), node.attrs.get("act"))


def run_pad(node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: Pads) -> torch.Tensor:
    return pad(xs[0], node_padding(node), float(node.attrs.get("value", 0.0)))


def run_convert(node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: Pads) -> torch.Tensor:
    return xs[0]  # (de)quantization: float execution keeps the value


def run_global_avgpool(node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: Pads) -> torch.Tensor:
    return xs[0].mean(dim=(2, 3), keepdim=True)


def run_flatten(node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: Pads) -> torch.Tensor:
    return torch.flatten(xs[0], node.attrs.get("axis", 1))


def run_reshape(node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: Pads) -> torch.Tensor:
    a = node.attrs
    target = list(a["shape"])
    target[0] = xs[0].shape[0]  # any batch size
    x = xs[0]
    if a.get("nhwc") and x.dim() == 4:  # the file's reshape reads NHWC order
        x = x.permute(0, 2, 3, 1)
    if a.get("nhwc") and len(target) == 4:  # and writes an NHWC map: back to NCHW
        n, c, h, w = target
        return x.reshape(n, h, w, c).permute(0, 3, 1, 2)
    return x.reshape(target)


def run_linear(node: Node, xs: list[torch.Tensor], conv: ConvParams | None, pads: Pads) -> torch.Tensor:
    assert conv is not None
    return _act(F.linear(xs[0], conv.weight, conv.bias), node)
