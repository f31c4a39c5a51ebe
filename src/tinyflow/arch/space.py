"""MBConv search spaces (MCUNet / OFA style): a compact genome resolved into an `Arch`.

A space is a stem conv, one fixed MBConv1 block, elastic stages (depth per stage, kernel and expand per
block slot), optional fixed tail blocks, and an optional 1x1 head conv. The width multiplier is fixed per space
instance (`with_width_resolution` gives the neighbouring space; TinyNAS stage 1 picks it). The resolution is fixed
too, unless `resolution_choices` makes it elastic (`with_resolutions`): then a genome carries its own input
resolution, as in MCUNetV2's joint search.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tinyflow.arch.genome import Arch, Block, make_divisible


class ArchOutsideSpaceError(ValueError):
    """An arch genome asks for a choice the space does not offer."""


@dataclass(frozen=True)
class StageSpec:
    """One elastic stage: base output width (before the width multiplier), stride of its first block."""

    width: int
    stride: int


@dataclass(frozen=True)
class MBConvSpace:
    """An elastic MBConv space. Stage widths are the base widths, scaled by `width_mult`.

    Defaults follow the ProxylessNAS/OFA MobileNetV2-based space that MCUNet searches: stem 32, an MBConv1
    block of 16, elastic stages of widths 24, 40, 80, 96, 192 (strides 2, 2, 2, 1, 2), then a fixed block of
    320 channels. Kernel {3,5,7}, expand {3,4,6}, depth {2,3,4}.

    `fixed_stages` pins the first N elastic stages at the largest choices (depth, kernel and expand): every arch
    built from the space has them so, whatever its genome says there. A supernet whose RNNPool stem replaces those
    stages sets it, so that every arch sampled or searched has the same blocks before the cut (hence the same cut
    index) and no two genomes differ only in blocks that never run.
    """

    width_mult: float = 1.0
    resolution: int = 224
    in_channels: int = 3
    num_classes: int = 1000
    stem_channels: int = 32
    first_block_channels: int = 16
    stages: tuple[StageSpec, ...] = (
        StageSpec(24, 2),
        StageSpec(40, 2),
        StageSpec(80, 2),
        StageSpec(96, 1),
        StageSpec(192, 2),
    )
    tail_channels: tuple[int, ...] = (320,)
    tail_kernel: int = 3
    tail_expand: int = 6
    head_channels: int = 1280  # 0: no head conv; scaled by max(1, width_mult) as torchvision does
    kernel_choices: tuple[int, ...] = (3, 5, 7)
    expand_choices: tuple[int, ...] = (3, 4, 6)
    depth_choices: tuple[int, ...] = (2, 3, 4)
    fixed_stages: int = 0
    resolution_choices: tuple[int, ...] = ()  # elastic resolution: the input sizes a genome may choose (MCUNetV2)
    name: str = "mcunet"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "stages",
            tuple(s if isinstance(s, StageSpec) else StageSpec(**dict(s)) for s in self.stages),
        )
        object.__setattr__(self, "tail_channels", tuple(self.tail_channels))
        for attr in ("kernel_choices", "expand_choices", "depth_choices", "resolution_choices"):
            object.__setattr__(self, attr, tuple(sorted(int(v) for v in getattr(self, attr))))

    # ---- geometry -------------------------------------------------------------------------------------
    @property
    def max_depth(self) -> int:
        return max(self.depth_choices)

    @property
    def n_slots(self) -> int:
        """Block slots that carry a kernel and an expand choice (stages x max depth)."""
        return len(self.stages) * self.max_depth

    def channels(self, base: int) -> int:
        return make_divisible(base * self.width_mult)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """The input resolutions a genome may choose: `resolution_choices`, or the space's one resolution."""
        return self.resolution_choices or (self.resolution,)

    @property
    def elastic_resolution(self) -> bool:
        return len(self.resolutions) > 1

    def with_width_resolution(self, width_mult: float, resolution: int) -> MBConvSpace:
        return replace(self, width_mult=float(width_mult), resolution=int(resolution), resolution_choices=())

    def with_resolutions(self, resolutions: Sequence[int]) -> MBConvSpace:
        """The same space with elastic resolution over `resolutions` (its base resolution: the largest, at which
        data is served and downscaled per batch while a supernet trains)."""
        rs = tuple(sorted({int(r) for r in resolutions}))
        if not rs or rs[0] < 8:
            raise ArchOutsideSpaceError(f"resolutions must be a non-empty list of sizes >= 8, got {list(resolutions)}")
        return replace(self, resolution=rs[-1], resolution_choices=rs if len(rs) > 1 else ())

    def bind(self, data: Any) -> MBConvSpace:
        """The same space for `data`'s input channels and number of classes (`data`: a DataModule)."""
        return replace(self, in_channels=int(data.in_channels), num_classes=int(data.num_classes))

    # ---- genome <-> arch --------------------------------------------------------------------------------
    def check(self, depths: Sequence[int], kernels: Sequence[int], expands: Sequence[int]) -> None:
        """Raise `ArchOutsideSpaceError` naming the first choice the space does not offer."""
        if len(depths) != len(self.stages):
            raise ArchOutsideSpaceError(f"depths has {len(depths)} entries; the space has {len(self.stages)} stages")
        for name, values, allowed in (
            ("kernels", kernels, self.kernel_choices),
            ("expands", expands, self.expand_choices),
        ):
            if len(values) != self.n_slots:
                raise ArchOutsideSpaceError(f"{name} has {len(values)} entries; the space has {self.n_slots} slots")
            for i, v in enumerate(values):
                if v not in allowed:
                    raise ArchOutsideSpaceError(f"{name}[{i}] = {v} is not one of {list(allowed)}")
        for i, d in enumerate(depths):
            if d not in self.depth_choices:
                raise ArchOutsideSpaceError(f"depths[{i}] = {d} is not one of {list(self.depth_choices)}")

    def pin(self, depths: list[int], kernels: list[int], expands: list[int]) -> None:
        """Set the genes of the first `fixed_stages` stages to the largest choices (in place)."""
        for s in range(min(max(0, self.fixed_stages), len(depths))):
            depths[s] = self.max_depth
            for slot in range(s * self.max_depth, (s + 1) * self.max_depth):
                kernels[slot], expands[slot] = max(self.kernel_choices), max(self.expand_choices)

    def build(
        self, depths: Sequence[int], kernels: Sequence[int], expands: Sequence[int], resolution: int | None = None
    ) -> Arch:
        """Resolve a genome (depth per stage; kernel and expand per slot; the input resolution, one of
        `resolutions`, default the space's) into an `Arch`."""
        depths, kernels, expands = list(depths), list(kernels), list(expands)
        self.check(depths, kernels, expands)
        resolution = self.resolution if resolution is None else int(resolution)
        if resolution not in self.resolutions:
            raise ArchOutsideSpaceError(f"resolution = {resolution} is not one of {list(self.resolutions)}")
        self.pin(depths, kernels, expands)
        stem = self.channels(self.stem_channels)
        blocks: list[Block] = []
        first = self.channels(self.first_block_channels)
        blocks.append(Block(stem, first, 3, 1, 1, stage=0))
        prev = first
        for s, (stage, depth) in enumerate(zip(self.stages, depths, strict=True)):
            out = self.channels(stage.width)
            for j in range(depth):
                slot = s * self.max_depth + j
                blocks.append(
                    Block(prev, out, kernels[slot], expands[slot], stage.stride if j == 0 else 1, stage=s + 1)
                )
                prev = out
        for t, width in enumerate(self.tail_channels):
            out = self.channels(width)
            blocks.append(Block(prev, out, self.tail_kernel, self.tail_expand, 1, stage=len(self.stages) + 1 + t))
            prev = out
        head = make_divisible(self.head_channels * max(1.0, self.width_mult)) if self.head_channels else 0
        genome = {
            "width_mult": self.width_mult,
            "resolution": resolution,
            "depths": depths,
            "kernels": kernels,
            "expands": expands,
        }
        return Arch(
            resolution=resolution,
            blocks=tuple(blocks),
            stem_channels=stem,
            head_channels=head,
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            name=self.name,
            genome=genome,
        )

    def from_genome(self, genome: dict[str, Any]) -> Arch:
        """Build from a genome dict; its width/resolution (if present) must match or re-target the space."""
        space = self
        resolution = genome.get("resolution")
        if genome.get("width_mult", self.width_mult) != self.width_mult or (
            resolution is not None and resolution not in self.resolutions
        ):
            space = self.with_width_resolution(
                genome.get("width_mult", self.width_mult), genome.get("resolution", self.resolution)
            )
        return space.build(genome["depths"], genome["kernels"], genome["expands"], resolution)

    # ---- sampling ------------------------------------------------------------------------------------
    def sample_genome(self, rng: random.Random) -> dict[str, Any]:
        """Depth per stage, kernel and expand per slot; with elastic resolution also `resolution` (drawn last, so a
        space with one resolution draws the same genomes as before)."""
        g: dict[str, Any] = {
            "depths": [rng.choice(self.depth_choices) for _ in self.stages],
            "kernels": [rng.choice(self.kernel_choices) for _ in range(self.n_slots)],
            "expands": [rng.choice(self.expand_choices) for _ in range(self.n_slots)],
        }
        if self.elastic_resolution:
            g["resolution"] = rng.choice(self.resolutions)
        return g

    def sample(self, rng: random.Random) -> Arch:
        g = self.sample_genome(rng)
        return self.build(g["depths"], g["kernels"], g["expands"], g.get("resolution"))

    def max_arch(self) -> Arch:
        n = self.n_slots
        return self.build(
            [self.max_depth] * len(self.stages), [max(self.kernel_choices)] * n, [max(self.expand_choices)] * n
        )

    def min_arch(self) -> Arch:
        n = self.n_slots
        return self.build(
            [min(self.depth_choices)] * len(self.stages), [min(self.kernel_choices)] * n, [min(self.expand_choices)] * n
        )

    def encode(self, arch: Arch) -> list[float]:
        """One-hot encoding of the genome (OFA's predictor input): per slot kernel and expand, zero for an
        inactive slot; per stage depth."""
        g = arch.genome
        vec: list[float] = []
        for s, d in enumerate(g["depths"]):
            vec += [1.0 if d == c else 0.0 for c in self.depth_choices]
            for j in range(self.max_depth):
                slot = s * self.max_depth + j
                active = j < d
                vec += [1.0 if active and g["kernels"][slot] == c else 0.0 for c in self.kernel_choices]
                vec += [1.0 if active and g["expands"][slot] == c else 0.0 for c in self.expand_choices]
        if self.elastic_resolution:  # the input resolution, one-hot (OFA's predictor encodes it too)
            vec += [1.0 if arch.resolution == r else 0.0 for r in self.resolutions]
        return vec
