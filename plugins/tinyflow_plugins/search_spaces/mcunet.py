"""`mcunet`: the MCUNet / OFA elastic MBConv space, its stage widths and choices from config.

`num_classes` and `in_channels` come from the data: stages call `space.bind(data)` once the data module is
built. `mobilenetv2` is the fixed MobileNetV2 member (a one-arch space) for baselines.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from tinyflow.arch.genome import Arch
from tinyflow.arch.space import MBConvSpace
from tinyflow.arch.zoo import mobilenetv2
from tinyflow.errors import ConfigError


class McunetSpace(MBConvSpace):
    """`MBConvSpace` built from config; checks its options with clear errors."""

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"search_space (mcunet): invalid stages ({exc}); give a list of {{width, stride}}"
            ) from None
        checks = (
            ("width_mult", self.width_mult > 0),
            ("resolution", self.resolution >= 8),
            ("stages", len(self.stages) > 0),
            ("kernel_choices", bool(self.kernel_choices) and all(k > 0 and k % 2 == 1 for k in self.kernel_choices)),
            ("expand_choices", bool(self.expand_choices) and all(e >= 1 for e in self.expand_choices)),
            ("depth_choices", bool(self.depth_choices) and all(d >= 1 for d in self.depth_choices)),
        )
        for name, ok in checks:
            if not ok:
                raise ConfigError(
                    f"search_space.{name} = {getattr(self, name)!r} is invalid: width_mult > 0, resolution >= 8, "
                    "at least one stage, odd positive kernels, expand >= 1, depth >= 1"
                )


@dataclass(frozen=True)
class MobileNetV2Space:
    """MobileNetV2 (torchvision rounding) as a one-member space: every sample is the same arch; its genome is
    empty (nothing to choose, nothing to pin)."""

    width_mult: float = 1.0
    resolution: int = 224
    in_channels: int = 3
    num_classes: int = 1000
    name: str = "mobilenetv2"
    fixed_stages: int = 0

    def arch(self) -> Arch:
        return mobilenetv2(self.width_mult, self.resolution, self.num_classes, self.in_channels)

    def sample(self, rng: random.Random) -> Arch:
        return self.arch()

    def sample_genome(self, rng: random.Random) -> dict[str, list[int]]:
        return {"depths": [], "kernels": [], "expands": []}

    def build(self, depths: Sequence[int], kernels: Sequence[int], expands: Sequence[int]) -> Arch:
        if list(depths) or list(kernels) or list(expands):
            raise ConfigError("search_space=mobilenetv2 is one fixed arch: its genome is empty.")
        return self.arch()

    def max_arch(self) -> Arch:
        return self.arch()

    def min_arch(self) -> Arch:
        return self.arch()

    def with_width_resolution(self, width_mult: float, resolution: int) -> MobileNetV2Space:
        return replace(self, width_mult=float(width_mult), resolution=int(resolution))

    def encode(self, arch: Arch) -> list[float]:
        return []

    def bind(self, data: Any) -> MobileNetV2Space:
        return replace(self, in_channels=int(data.in_channels), num_classes=int(data.num_classes))
