"""The architecture genome: one resolved description of an MBConv network.

`Arch` is what every part of tinyflow agrees on. The memory engine builds its IR from it (no torch), the
static PyTorch network is built from it, and the elastic supernet activates it. A search space
(`tinyflow.arch.space.MBConvSpace`) turns a compact choice (width, resolution, depth/kernel/expand per slot)
into an `Arch`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, fields
from typing import Any


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor` the way torchvision's MobileNetV2 does.

    Rounds to the nearest multiple, never below `min_value` (default `divisor`), and never more than 10%
    below `value`.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class Block:
    """One inverted-residual (MBConv) block: [1x1 expand] -> kxk depthwise -> 1x1 project (linear).

    `expand == 1` means no expand conv (MobileNetV2's first block). The block has a residual connection
    when its stride is 1 and its input and output channel counts are equal.
    """

    in_channels: int
    out_channels: int
    kernel: int
    expand: int
    stride: int
    stage: int

    @property
    def hidden(self) -> int:
        """Channels after the expand conv (the depthwise conv's width)."""
        return self.in_channels * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclass(frozen=True)
class Arch:
    """A static MBConv network: stem conv, blocks, optional 1x1 head conv, global pool, classifier.

    Activations are ReLU6 after every conv except the projection convs (MobileNetV2 convention).
    """

    resolution: int
    blocks: tuple[Block, ...]
    stem_channels: int
    head_channels: int = 0  # 0: no 1x1 feature-mix conv before the pool
    in_channels: int = 3
    num_classes: int = 1000
    stem_kernel: int = 3
    stem_stride: int = 2
    name: str = "mbconv"
    # the compact choice this arch was resolved from (space-specific, used for encodings), optional
    genome: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if self.resolution <= 0:
            raise ValueError(f"Arch.resolution must be positive, got {self.resolution}")
        prev = self.stem_channels
        for i, b in enumerate(self.blocks):
            if b.in_channels != prev:
                raise ValueError(
                    f"Arch block {i}: in_channels {b.in_channels} does not match the previous output {prev}"
                )
            if b.kernel % 2 == 0 or b.kernel < 1:
                raise ValueError(f"Arch block {i}: kernel must be odd and positive, got {b.kernel}")
            prev = b.out_channels

    @property
    def last_channels(self) -> int:
        """Channels entering the global pool."""
        return self.head_channels or (self.blocks[-1].out_channels if self.blocks else self.stem_channels)

    def to_dict(self) -> dict[str, Any]:
        """`dataclasses.asdict(self)` (blocks as a tuple of dicts, the genome a deep copy), built directly: asdict's
        generic recursion made keying archs most of an evolution search's time."""
        d = self._fields(skip=())
        d["genome"] = copy.deepcopy(self.genome)
        return d

    def _fields(self, skip: tuple[str, ...]) -> dict[str, Any]:
        """The fields but `skip`, blocks as a tuple of dicts (the genome, if kept, is the arch's own dict)."""
        d = {name: getattr(self, name) for name in _ARCH_FIELDS if name not in skip}
        d["blocks"] = tuple({name: getattr(b, name) for name in _BLOCK_FIELDS} for b in self.blocks)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arch:
        data = dict(data)
        data["blocks"] = tuple(Block(**b) for b in data["blocks"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Arch:
        return cls.from_dict(json.loads(text))

    def key(self) -> str:
        """A short stable identity for caching (excludes the name and genome); computed once per arch (frozen)."""
        cached = self.__dict__.get("_key")
        if cached is None:
            cached = json.dumps(self._fields(skip=("name", "genome")), sort_keys=True)
            object.__setattr__(self, "_key", cached)  # not a field: equality, hashing and to_dict ignore it
        return cached


_ARCH_FIELDS = tuple(f.name for f in fields(Arch))
_BLOCK_FIELDS = tuple(f.name for f in fields(Block))
