"""Op kinds of the network IR: each kind knows its output shape, MACs, parameter counts and aliasing.

Shapes are NCHW tuples (batch included, normally 1); a flat tensor is (N, F). A new op kind (RNNPool, …) is a
subclass of `OpKind` registered with `register_op`; the IR, the cost models and the memory planner then handle
it without further changes. What the executors, the firmware and the patch geometry do with a kind (its executor
kernel, C lowering, oracle, C emission, receptive-field rule, MAC count) is declared beside it in
`tinyflow.ir.op_registry`: the kinds here in `tinyflow.ir.kinds.builtin`, a further kind in a module of its own
under `tinyflow.ir.kinds` (e.g. `transpose`) that registers both.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from tinyflow.errors import TinyflowError

if TYPE_CHECKING:
    from tinyflow.ir.graph import Node

Shape = tuple[int, ...]


class Window(NamedTuple):
    """A windowed op's geometry: kernel (kh, kw), stride, padding (top, left, bottom, right), dilation."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]


class IRError(TinyflowError):
    """A network IR is malformed: shape mismatch, unknown op, dangling input."""


class OpKind:
    """Behaviour shared by every node of one op kind.

    `alias` tells the memory planner whether the output may share its input's buffer:
    ``"none"`` (a new tensor), ``"view"`` (same bytes, e.g. reshape: always shared),
    ``"inplace"`` (elementwise: shared when the input dies at this op) or
    ``"inplace_depthwise"`` (shared when `memory.inplace_depthwise` is on and the input dies here).
    """

    name: ClassVar[str] = ""
    alias: ClassVar[str] = "none"
    n_inputs: ClassVar[tuple[int, int | None]] = (1, 1)  # min, max (None = any)

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        raise NotImplementedError

    def macs(self, node: Node, inputs: list[Shape], out: Shape) -> int:
        return 0

    def params(self, node: Node, inputs: list[Shape]) -> tuple[int, int]:
        """(weight elements, bias elements); bias here counts one per output channel of a conv/linear."""
        return 0, 0

    def out_channels(self, node: Node, inputs: list[Shape], out: Shape) -> int:
        """Output channels that carry a per-channel quantization scale (0 for weightless ops)."""
        return 0

    def alias_kind(self, node: Node, inputs: list[Shape]) -> str:
        return self.alias

    def window(self, node: Node) -> Window:
        """The kernel window of a `windowed` kind (see `tinyflow.ir.op_registry`); other kinds have none."""
        raise IRError(f"node '{node.name}' ({node.op}): op kind '{self.name}' reads no kernel window")


OP_KINDS: dict[str, OpKind] = {}


def register_op(kind: type[OpKind]) -> type[OpKind]:
    """Class decorator: make an op kind available to the IR under `kind.name`."""
    if not kind.name:
        raise IRError(f"op kind {kind.__qualname__} has no `name`")
    OP_KINDS[kind.name] = kind()
    return kind


def get_op(name: str) -> OpKind:
    try:
        return OP_KINDS[name]
    except KeyError:
        raise IRError(f"unknown op kind '{name}'; known kinds: {', '.join(sorted(OP_KINDS))}") from None


def _need_rank(node: Node, shape: Shape, rank: int) -> None:
    if len(shape) != rank:
        raise IRError(f"node '{node.name}' ({node.op}): expects a rank-{rank} input, got shape {list(shape)}")


def _window(size: int, k: int, s: int, p0: int, p1: int, d: int, node: Node, axis: str) -> int:
    out = (size + p0 + p1 - d * (k - 1) - 1) // s + 1
    if out <= 0:
        raise IRError(
            f"node '{node.name}' ({node.op}): kernel {k} stride {s} does not fit a {axis} of {size} "
            f"(padding {p0}+{p1}); the output would be empty"
        )
    return out


@register_op
class Conv2d(OpKind):
    """attrs: out_channels, kernel (kh, kw), stride (sh, sw), padding (top, left, bottom, right), groups,
    dilation (dh, dw), act (fused activation name or None)."""

    name = "conv2d"

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        x = inputs[0]
        _need_rank(node, x, 4)
        a = node.attrs
        cin, groups, cout = x[1], a.get("groups", 1), a["out_channels"]
        if cin % groups or cout % groups:
            raise IRError(
                f"node '{node.name}' (conv2d): {cin} input / {cout} output channels are not divisible by "
                f"groups={groups}"
            )
        if "in_channels" in a and a["in_channels"] != cin:
            raise IRError(
                f"node '{node.name}' (conv2d): expects {a['in_channels']} input channels, its input "
                f"'{node.inputs[0]}' has shape {list(x)}"
            )
        kh, kw = a["kernel"]
        sh, sw = a.get("stride", (1, 1))
        pt, pl, pb, pr = a.get("padding", (0, 0, 0, 0))
        dh, dw = a.get("dilation", (1, 1))
        return (
            x[0],
            cout,
            _window(x[2], kh, sh, pt, pb, dh, node, "height"),
            _window(x[3], kw, sw, pl, pr, dw, node, "width"),
        )

    def macs(self, node: Node, inputs: list[Shape], out: Shape) -> int:
        kh, kw = node.attrs["kernel"]
        return out[0] * out[1] * out[2] * out[3] * (inputs[0][1] // node.attrs.get("groups", 1)) * kh * kw

    def params(self, node: Node, inputs: list[Shape]) -> tuple[int, int]:
        a = node.attrs
        kh, kw = a["kernel"]
        return a["out_channels"] * (inputs[0][1] // a.get("groups", 1)) * kh * kw, a["out_channels"]

    def out_channels(self, node: Node, inputs: list[Shape], out: Shape) -> int:
        return node.attrs["out_channels"]

    def window(self, node: Node) -> Window:
        a = node.attrs
        return Window(
            tuple(a["kernel"]),
            tuple(a.get("stride", (1, 1))),
            tuple(a.get("padding", (0,) * 4)),
            tuple(a.get("dilation", (1, 1))),
        )

    def alias_kind(self, node: Node, inputs: list[Shape]) -> str:
        groups = node.attrs.get("groups", 1)
        if groups > 1 and groups == inputs[0][1] == node.attrs["out_channels"]:
            return "inplace_depthwise"
        return "none"


@register_op
class Linear(OpKind):
    """attrs: out_features, act. Input (N, F) -> (N, out_features)."""

    name = "linear"

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        x = inputs[0]
        if len(x) != 2:
            raise IRError(f"node '{node.name}' (linear): expects a flat (N, F) input, got shape {list(x)}")
        if "in_features" in node.attrs and node.attrs["in_features"] != x[1]:
            raise IRError(
                f"node '{node.name}' (linear): expects {node.attrs['in_features']} input features, its input "
                f"'{node.inputs[0]}' has shape {list(x)}"
            )
        return (x[0], node.attrs["out_features"])

    def macs(self, node: Node, inputs: list[Shape], out: Shape) -> int:
        return out[0] * inputs[0][1] * out[1]

    def params(self, node: Node, inputs: list[Shape]) -> tuple[int, int]:
        return inputs[0][1] * node.attrs["out_features"], node.attrs["out_features"]

    def out_channels(self, node: Node, inputs: list[Shape], out: Shape) -> int:
        return node.attrs["out_features"]


def _broadcast(node: Node, shapes: list[Shape]) -> Shape:
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out = []
    for dims in zip(*padded):
        big = max(dims)
        if any(d not in (1, big) for d in dims):
            raise IRError(
                f"node '{node.name}' ({node.op}): input shapes {[list(s) for s in shapes]} do not broadcast; "
                f"inputs {list(node.inputs)}"
            )
        out.append(big)
    return tuple(out)


@register_op
class Add(OpKind):
    """Elementwise sum (a residual join); broadcasting allowed. A new output tensor."""

    name = "add"
    n_inputs = (2, None)

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        return _broadcast(node, inputs)


@register_op
class Mul(OpKind):
    """Elementwise product (squeeze-excite scaling, decomposed HardSwish); broadcasting allowed."""

    name = "mul"
    n_inputs = (2, None)

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        return _broadcast(node, inputs)

    def macs(self, node: Node, inputs: list[Shape], out: Shape) -> int:
        return math.prod(out)


@register_op
class Concat(OpKind):
    """attrs: axis (default 1, channels)."""

    name = "concat"
    n_inputs = (1, None)

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        axis = node.attrs.get("axis", 1)
        rank = len(inputs[0])
        axis = axis % rank
        for s in inputs[1:]:
            if len(s) != rank or any(a != b for i, (a, b) in enumerate(zip(s, inputs[0])) if i != axis):
                raise IRError(
                    f"node '{node.name}' (concat): shapes {[list(s) for s in inputs]} differ outside axis {axis}; "
                    f"inputs {list(node.inputs)}"
                )
        out = list(inputs[0])
        out[axis] = sum(s[axis] for s in inputs)
        return tuple(out)


class _Pool(OpKind):
    def window(self, node: Node) -> Window:
        a = node.attrs
        kernel = tuple(a["kernel"])
        return Window(kernel, tuple(a.get("stride", kernel)), tuple(a.get("padding", (0,) * 4)), (1, 1))

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        x = inputs[0]
        _need_rank(node, x, 4)
        a = node.attrs
        kh, kw = a["kernel"]
        sh, sw = a.get("stride", (kh, kw))
        pt, pl, pb, pr = a.get("padding", (0, 0, 0, 0))
        return (
            x[0],
            x[1],
            _window(x[2], kh, sh, pt, pb, 1, node, "height"),
            _window(x[3], kw, sw, pl, pr, 1, node, "width"),
        )


@register_op
class MaxPool(_Pool):
    """attrs: kernel, stride, padding."""

    name = "maxpool"


@register_op
class AvgPool(_Pool):
    """attrs: kernel, stride, padding."""

    name = "avgpool"


@register_op
class GlobalAvgPool(OpKind):
    """(N, C, H, W) -> (N, C, 1, 1)."""

    name = "global_avgpool"

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        x = inputs[0]
        _need_rank(node, x, 4)
        return (x[0], x[1], 1, 1)


@register_op
class Activation(OpKind):
    """A stand-alone elementwise activation (attrs: fn); runs in place when its input dies here."""

    name = "act"
    alias = "inplace"

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        return inputs[0]


@register_op
class BatchNorm(OpKind):
    """A batch norm that could not be folded into a conv: per-channel scale and shift, in place."""

    name = "batchnorm"
    alias = "inplace"

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        if len(inputs[0]) < 2:
            raise IRError(f"node '{node.name}' (batchnorm): input shape {list(inputs[0])} has no channel axis")
        return inputs[0]

    def params(self, node: Node, inputs: list[Shape]) -> tuple[int, int]:
        return inputs[0][1], inputs[0][1]


@register_op
class Flatten(OpKind):
    """attrs: axis (default 1): (N, C, H, W) -> (N, C·H·W). A view of its input."""

    name = "flatten"
    alias = "view"

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        x = inputs[0]
        axis = node.attrs.get("axis", 1) % max(len(x), 1)
        return (math.prod(x[:axis]), math.prod(x[axis:]))


@register_op
class Reshape(OpKind):
    """attrs: shape (resolved, no -1 / 0 left). A view of its input."""

    name = "reshape"
    alias = "view"

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        target = tuple(int(d) for d in node.attrs["shape"])
        if any(d <= 0 for d in target):  # [-2, -96] has the right product and is no shape
            raise IRError(f"node '{node.name}' (reshape): target shape {list(target)} has a dimension below 1")
        if math.prod(target) != math.prod(inputs[0]):
            raise IRError(
                f"node '{node.name}' (reshape): cannot reshape {list(inputs[0])} ({math.prod(inputs[0])} elements) "
                f"to {list(target)}"
            )
        return target


@register_op
class Pad(OpKind):
    """attrs: padding (top, left, bottom, right), value (default 0). A zero pad that only convolutions read is
    folded into their padding by the importers; this is a pad that is a tensor of its own (TF Lite Micro's PAD)."""

    name = "pad"

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        x = inputs[0]
        _need_rank(node, x, 4)
        pt, pl, pb, pr = node.attrs["padding"]
        return (x[0], x[1], x[2] + pt + pb, x[3] + pl + pr)


@register_op
class Convert(OpKind):
    """A (de)quantization that is an op of its own (TFLite QUANTIZE / DEQUANTIZE): same shape, a new tensor whose
    element size is the node's `elem_bytes` (attrs: to, the element type name)."""

    name = "convert"

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        return inputs[0]


@register_op
class Input(OpKind):
    """The network input (attrs: shape)."""

    name = "input"
    n_inputs = (0, 0)

    def shape(self, node: Node, inputs: list[Shape]) -> Shape:
        return tuple(int(d) for d in node.attrs["shape"])


def describe_attrs(attrs: dict[str, Any]) -> str:
    """Short human-readable attribute summary for tables."""
    keys = ("kernel", "stride", "groups", "act")
    return " ".join(f"{k}={attrs[k]}" for k in keys if k in attrs and attrs[k] not in (None, 1, (1, 1)))


from tinyflow.ir import kinds as _kinds  # noqa: E402, F401  (declares every kind's parts; registers further kinds)
