"""Fixed members of the MBConv family: MobileNetV2 (torchvision channel rounding) and friends."""

from __future__ import annotations

from collections.abc import Sequence

from tinyflow.arch.genome import Arch, Block, make_divisible

# (expand t, base channels c, repeats n, first stride s) — MobileNetV2, Sandler et al. 2018, Table 2
MBV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def mobilenetv2(
    width_mult: float = 1.0,
    resolution: int = 224,
    num_classes: int = 1000,
    in_channels: int = 3,
    kernels: Sequence[int] | None = None,
    settings: Sequence[tuple[int, int, int, int]] = MBV2_SETTINGS,
    name: str = "mobilenetv2",
) -> Arch:
    """MobileNetV2 with torchvision's rounding (channels to multiples of 8, head 1280·max(1, w)).

    `kernels` optionally overrides the depthwise kernel of each of the 17 blocks (used by MbV2-RD).
    """
    stem = make_divisible(32 * width_mult)
    blocks: list[Block] = []
    prev = stem
    for stage, (t, c, n, s) in enumerate(settings):
        out = make_divisible(c * width_mult)
        for i in range(n):
            blocks.append(Block(prev, out, 3, t, s if i == 0 else 1, stage=stage))
            prev = out
    if kernels is not None:
        if len(kernels) != len(blocks):
            raise ValueError(f"kernels has {len(kernels)} entries; the network has {len(blocks)} blocks")
        blocks = [Block(b.in_channels, b.out_channels, k, b.expand, b.stride, b.stage) for b, k in zip(blocks, kernels)]
    head = make_divisible(1280 * max(1.0, width_mult))
    return Arch(
        resolution=resolution,
        blocks=tuple(blocks),
        stem_channels=stem,
        head_channels=head,
        in_channels=in_channels,
        num_classes=num_classes,
        name=name,
        genome={"width_mult": width_mult, "resolution": resolution},
    )
