"""The op-kind registry: for every IR op kind, where each of its parts lives.

An op kind's shape, parameters and aliasing are its `OpKind` (`tinyflow.ir.ops`); everything the other layers do
with a node of that kind is declared here, once, as an `OpParts`:

- ``executor``: the PyTorch float / fake-quant kernel, ``(node, xs, conv, pads) -> Tensor`` (`tinyflow.execute`);
- ``lowering``: node -> integer layer, ``(ctx, node) -> QLayer`` (`tinyflow.firmware.lowering`);
- ``layers``: for each firmware layer kind the lowering can produce, its NumPy ``oracle``
  (``(layer, xs) -> ndarray``, `tinyflow.firmware.oracle`) and its C ``emission``
  (``(layer, ident, views, layer_plan) -> str``, `tinyflow.firmware.codegen`);
- ``receptive_field``: ``windowed`` (an output pixel reads a kernel window of its input, `OpKind.window`),
  ``elementwise`` (the same pixel of same-sized inputs) or ``barrier`` (cannot run patch by patch);
- ``macs``: the MAC count, ``(node, in_shapes, out_shape) -> int``; `OPKIND_MACS` names the `OpKind.macs`
  formula of the registered kind.

A part is a callable, a lazy reference ``"package.module:attribute"`` (imported on first use, so the IR never
imports torch or the firmware) or `Unsupported(reason)` — a part a kind does not have is declared, never missing.
The kinds of `tinyflow.ir.ops` are declared in `tinyflow.ir.kinds.builtin`; a new kind is one module that
registers its `OpKind` and its `OpParts` (see `tinyflow.ir.kinds.transpose`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tinyflow.ir.ops import IRError, get_op

RF_RULES = ("windowed", "elementwise", "barrier")
PARTS = ("executor", "lowering", "oracle", "emission", "receptive_field", "macs")


@dataclass(frozen=True)
class Unsupported:
    """A part the kind does not have, and why (the error a caller reaching for it raises)."""

    reason: str


class _OpKindMacs:
    def __repr__(self) -> str:
        return "OPKIND_MACS"


#: the `macs` part of a kind whose MAC count is its `OpKind.macs` formula
OPKIND_MACS: Any = _OpKindMacs()

Part = Callable[..., Any] | str | Unsupported


@dataclass(frozen=True)
class LayerParts:
    """One firmware layer kind: its NumPy oracle and C emission; `patch` when the emission runs on a patch view
    (a rectangle of a buffer with its own origin and row stride), not only on whole tensors."""

    oracle: Part
    emission: Part
    patch: bool = False


@dataclass(frozen=True)
class OpParts:
    """Every part of one op kind (see the module docstring); `layers` maps the firmware layer kinds its lowering
    produces to their oracle and emission, or is `Unsupported` when the kind has no integer layer."""

    executor: Part
    lowering: Part
    layers: Mapping[str, LayerParts] | Unsupported
    receptive_field: str
    macs: Part
    _resolved: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.receptive_field not in RF_RULES:
            raise IRError(f"receptive-field rule '{self.receptive_field}' is not one of {RF_RULES}")


OP_PARTS: dict[str, OpParts] = {}
LAYER_KINDS: dict[str, tuple[str, LayerParts]] = {}  # firmware layer kind -> (first op kind declaring it, parts)


class UnsupportedPart(IRError):
    """A part an op kind declares `Unsupported` (the message says which kind, which part and why)."""


def register_parts(op: str, parts: OpParts) -> OpParts:
    """Declare the parts of op kind `op` (its `OpKind` may be registered before or after). Several op kinds may
    lower to one firmware layer kind (flatten and reshape: `view`) only with the same oracle and emission."""
    layers = {} if isinstance(parts.layers, Unsupported) else parts.layers
    for kind, lp in layers.items():
        owner, known = LAYER_KINDS.get(kind, (op, lp))
        if owner != op and known != lp:
            raise IRError(f"firmware layer kind '{kind}' of op kind '{op}' is already declared by '{owner}'")
    for kind, lp in layers.items():
        LAYER_KINDS[kind] = (op, lp)
    OP_PARTS[op] = parts
    return parts


def resolve(ref: Part) -> Any:
    """A callable part: itself, or the attribute a ``"module:attr"`` reference names (imported now)."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def parts_of(op: str) -> OpParts:
    try:
        return OP_PARTS[op]
    except KeyError:
        raise IRError(
            f"op kind '{op}' declares no parts (executor, lowering, oracle, emission, receptive field, MACs); "
            f"register them with tinyflow.ir.op_registry.register_parts; declared kinds: {', '.join(sorted(OP_PARTS))}"
        ) from None


def declared(op: str, part: str) -> Part | Mapping[str, LayerParts] | str:
    """What op kind `op` declares for `part` (unresolved: a reference, a callable, a rule or `Unsupported`)."""
    if part not in (*PARTS, "layers"):
        raise IRError(f"'{part}' is not an op-kind part; parts: {', '.join(PARTS)}")
    p = parts_of(op)
    if part in ("oracle", "emission"):
        return p.layers if isinstance(p.layers, Unsupported) else {k: getattr(v, part) for k, v in p.layers.items()}
    return getattr(p, part)


def op_part(op: str, part: str) -> Any:
    """The resolved `part` of op kind `op`: ``executor``, ``lowering`` or ``macs`` (a callable), or
    ``receptive_field`` (a rule name). Raises `UnsupportedPart` with the declared reason when the kind has none."""
    if part == "receptive_field":
        return parts_of(op).receptive_field
    if part not in ("executor", "lowering", "macs"):
        raise IRError(f"op_part: '{part}' is per firmware layer kind; use layer_part(kind, '{part}')")
    p = parts_of(op)
    if part not in p._resolved:
        ref = getattr(p, part)
        if isinstance(ref, Unsupported):
            raise UnsupportedPart(f"op kind '{op}' has no {part}: {ref.reason}")
        p._resolved[part] = get_op(op).macs if ref is OPKIND_MACS else resolve(ref)
    return p._resolved[part]


def layer_part(kind: str, part: str) -> Any:
    """The resolved ``oracle`` or ``emission`` of firmware layer kind `kind`."""
    if part not in ("oracle", "emission"):
        raise IRError(f"layer_part: '{part}' is not a firmware layer part (oracle, emission)")
    try:
        op, lp = LAYER_KINDS[kind]
    except KeyError:
        raise IRError(
            f"firmware layer kind '{kind}' is declared by no op kind; declared: {', '.join(sorted(LAYER_KINDS))}"
        ) from None
    ref = getattr(lp, part)
    if isinstance(ref, Unsupported):
        raise UnsupportedPart(f"firmware layer kind '{kind}' (op kind '{op}') has no {part}: {ref.reason}")
    return resolve(ref)


def layer_runs_on_patches(kind: str) -> bool:
    """Whether the C emission of firmware layer kind `kind` runs on a patch view."""
    entry = LAYER_KINDS.get(kind)
    return entry is not None and entry[1].patch


def rf_rule(op: str) -> str:
    """The receptive-field rule of op kind `op`: windowed, elementwise or barrier."""
    return parts_of(op).receptive_field
