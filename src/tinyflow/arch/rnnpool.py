"""RNNPool rewrite of an MBConv `Arch` (pure Python): stem conv -> RNNPool -> the arch's blocks from `cut` on.

The early high-resolution part of the network (everything between the stem conv and block `cut`) is replaced
by one RNNPool layer over the stem's output, as in the RNNPool paper's MobileNetV2 models. The first kept block
takes RNNPool's 4·hidden2 channels as its input (its residual disappears if the width changes).
`cut: auto` keeps the blocks from the first stage that starts at or below RNNPool's output resolution, so the
rest of the network sees the same resolutions as before (MobileNetV2 at 224 with stride 4: RNNPool gives
28×28 after the 112×112 stem, and the network resumes at block 6, the 64-channel stage).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from tinyflow.arch.genome import Arch, Block
from tinyflow.arch.space import MBConvSpace
from tinyflow.errors import ConfigError


def _pair(value: Any, field: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    try:
        pair = tuple(int(v) for v in value)
    except TypeError:
        pair = ()
    if len(pair) != 2:
        raise ConfigError(f"rnnpool.{field} must be an int or a pair [rows, cols], got {value!r}.")
    return pair  # type: ignore[return-value]


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a conv with same padding kernel//2 (the convention of StaticNet and the IR)."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class RNNPoolOptions:
    """What the `rnnpool` scheduler config chooses. `padding: None` means (patch − stride) // 2 per side."""

    cut: int | str = "auto"
    patch: int | tuple[int, int] = 6
    stride: int | tuple[int, int] = 4
    hidden1: int = 8
    hidden2: int = 8
    padding: int | tuple[int, int] | None = None
    stem_channels: int | None = None  # None: keep the arch's stem width
    cell: str = "fastgrnn"

    @classmethod
    def from_config(cls, cfg: Any) -> RNNPoolOptions:
        """From a dict / DictConfig holding (a subset of) the fields; unknown keys are a ConfigError."""
        data = dict(cfg or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"rnnpool: unknown option(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}."
            )
        for key in ("patch", "stride", "padding"):
            if data.get(key) is not None and not isinstance(data[key], int):
                data[key] = _pair(data[key], key)
        return cls(**data)


@dataclass(frozen=True)
class RNNPoolArch:
    """A resolved RNNPool network: `base`'s stem (width `stem_channels`), RNNPool, then `blocks`."""

    base: Arch
    cut: int
    patch: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    hidden1: int
    hidden2: int
    stem_channels: int
    cell: str
    blocks: tuple[Block, ...]

    @property
    def stem_hw(self) -> tuple[int, int]:
        r = conv_out(self.base.resolution, self.base.stem_kernel, self.base.stem_stride)
        return r, r

    @property
    def pooled_hw(self) -> tuple[int, int]:
        (h, w), (r, c), (sr, sc), (pr, pc) = self.stem_hw, self.patch, self.stride, self.padding
        return (h + 2 * pr - r) // sr + 1, (w + 2 * pc - c) // sc + 1

    @property
    def pooled_channels(self) -> int:
        return 4 * self.hidden2

    @property
    def n_patches(self) -> int:
        ho, wo = self.pooled_hw
        return ho * wo

    @property
    def name(self) -> str:
        return f"{self.base.name}-rnnpool"

    def options(self) -> dict[str, Any]:
        """The resolved options (JSON-ready) — what a run records and `RNNPoolOptions` accepts back."""
        return {
            "cut": self.cut,
            "patch": list(self.patch),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "hidden1": self.hidden1,
            "hidden2": self.hidden2,
            "stem_channels": self.stem_channels,
            "cell": self.cell,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "rnnpool": self.options()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RNNPoolArch:
        return rewrite(Arch.from_dict(data["base"]), RNNPoolOptions.from_config(data["rnnpool"]))


def block_input_resolutions(arch: Arch) -> list[int]:
    """Input resolution of every block of `arch` (square maps)."""
    res = conv_out(arch.resolution, arch.stem_kernel, arch.stem_stride)
    out = []
    for b in arch.blocks:
        out.append(res)
        res = conv_out(res, b.kernel, b.stride)
    return out


def auto_cut(arch: Arch, pooled: int) -> int:
    """First block that starts a stage and whose input resolution is at most `pooled`."""
    res = block_input_resolutions(arch)
    for i, b in enumerate(arch.blocks):
        starts_stage = i == 0 or b.stage != arch.blocks[i - 1].stage
        if starts_stage and res[i] <= pooled:
            return i
    for i, r in enumerate(res):  # no stage boundary there: the first block at that resolution
        if r <= pooled:
            return i
    raise ConfigError(
        f"rnnpool.cut=auto: no block of '{arch.name}' runs at or below RNNPool's output resolution {pooled}; "
        "give rnnpool.cut explicitly or a larger rnnpool.stride."
    )


def rewrite(arch: Arch, options: RNNPoolOptions | dict[str, Any] | None = None) -> RNNPoolArch:
    """Replace the early part of `arch` by RNNPool according to `options`; clear errors for impossible choices."""
    opts = options if isinstance(options, RNNPoolOptions) else RNNPoolOptions.from_config(options)
    patch, stride = _pair(opts.patch, "patch"), _pair(opts.stride, "stride")
    padding = (
        tuple(max(0, (k - s) // 2) for k, s in zip(patch, stride))
        if opts.padding is None
        else _pair(opts.padding, "padding")
    )
    for field, value in (("hidden1", opts.hidden1), ("hidden2", opts.hidden2)):
        if int(value) < 1:
            raise ConfigError(f"rnnpool.{field} must be a positive integer, got {value}.")
    if min(patch) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ConfigError(f"rnnpool: patch {patch} and stride {stride} must be positive, padding {padding} >= 0.")
    if opts.cell not in ("fastgrnn", "gru"):
        raise ConfigError(f"rnnpool.cell must be 'fastgrnn' or 'gru', got {opts.cell!r}.")
    stem_ch = int(opts.stem_channels or arch.stem_channels)
    stem = conv_out(arch.resolution, arch.stem_kernel, arch.stem_stride)
    if stem + 2 * min(padding) < max(patch):
        raise ConfigError(
            f"rnnpool: the {stem}x{stem} stem output of '{arch.name}' (resolution {arch.resolution}) is smaller "
            f"than one {patch[0]}x{patch[1]} patch; use a smaller rnnpool.patch or a larger resolution."
        )
    pooled = (stem + 2 * padding[0] - patch[0]) // stride[0] + 1
    if opts.cut == "auto":
        cut = auto_cut(arch, pooled)
    else:
        try:
            cut = int(opts.cut)
        except (TypeError, ValueError):
            raise ConfigError(f"rnnpool.cut must be 'auto' or a block index, got {opts.cut!r}.") from None
    if not 0 <= cut < len(arch.blocks):
        raise ConfigError(
            f"rnnpool.cut={cut} is not a block index of '{arch.name}' (0..{len(arch.blocks) - 1}); it names the "
            "first block kept after RNNPool."
        )
    first = arch.blocks[cut]
    blocks = (replace(first, in_channels=4 * int(opts.hidden2)), *arch.blocks[cut + 1 :])
    return RNNPoolArch(
        base=arch,
        cut=cut,
        patch=patch,
        stride=stride,
        padding=padding,  # type: ignore[arg-type]
        hidden1=int(opts.hidden1),
        hidden2=int(opts.hidden2),
        stem_channels=stem_ch,
        cell=opts.cell,
        blocks=blocks,
    )


@dataclass(frozen=True)
class SupernetStem:
    """An RNNPool stem of an elastic supernet: stem conv -> RNNPool -> the space's blocks from stage `cut_stage` on.

    `space` is the supernet's space with the stages before the cut pinned (`MBConvSpace.fixed_stages`), so every
    arch of it has the same blocks before the cut and `options.cut` (resolved on the largest arch) is the first
    kept block's index in every one of them.
    """

    space: MBConvSpace
    options: RNNPoolOptions
    cut_stage: int  # `Block.stage` of the first kept block: 0 = the fixed first block, s = elastic stage s

    def cut(self, arch: Arch) -> int:
        """Index of `arch`'s first kept block (`options.cut` for an arch of `space`)."""
        for i, b in enumerate(arch.blocks):
            if b.stage >= self.cut_stage:
                return i
        raise ConfigError(
            f"arch '{arch.name}' has no block at or after the RNNPool stem's cut (stage {self.cut_stage})."
        )

    def rewrite(self, arch: Arch) -> RNNPoolArch:
        """`arch` as the network the supernet runs for it: whatever its blocks before the cut, they are cut off."""
        return rewrite(arch, replace(self.options, cut=self.cut(arch)))

    def to_dict(self) -> dict[str, Any]:
        """The resolved options (JSON-ready, `RNNPoolOptions` fields, the cut a block index)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.options).items()}


def supernet_stem(space: MBConvSpace, options: RNNPoolOptions | dict[str, Any] | None = None) -> SupernetStem:
    """Resolve RNNPool options (as for `scheduler=rnnpool`) on `space`'s largest arch into a supernet stem.

    The cut must be the first block of a stage (`cut: auto` is, unless no stage starts at RNNPool's output
    resolution): the elastic depth of a stage cannot be split by the cut. ConfigError names the valid cuts otherwise.
    """
    opts = options if isinstance(options, RNNPoolOptions) else RNNPoolOptions.from_config(options)
    top = space.max_arch()
    rarch = rewrite(top, opts)
    cut, blocks = rarch.cut, top.blocks
    stage = blocks[cut].stage
    if cut > 0 and blocks[cut - 1].stage == stage:
        members = [i for i, b in enumerate(blocks) if b.stage == stage]
        raise ConfigError(
            f"rnnpool.cut={cut} falls inside stage {stage} (blocks {members[0]}..{members[-1]} of the largest arch of "
            f"space '{space.name}'): an RNNPool supernet stem keeps whole stages, since a stage's elastic depth cannot "
            f"be split. Set rnnpool.cut (scheduler.cut) to a stage's first block, e.g. {members[0]} or "
            f"{members[-1] + 1}, or to auto."
        )
    fixed = min(max(0, stage - 1), len(space.stages))  # elastic stage s (0-based) has Block.stage s + 1
    pinned = replace(space, fixed_stages=max(space.fixed_stages, fixed))
    return SupernetStem(pinned, RNNPoolOptions.from_config(rarch.options()), stage)
