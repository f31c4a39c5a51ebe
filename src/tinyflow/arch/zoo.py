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


# MbV2-RD (MCUNetV2 §4.4): the receptive field is moved out of the patch stage (stem + blocks 1-4) into the
# per-layer stage. MCUNetV2 states the recipe — smaller kernels, hence a smaller receptive field, in the patch
# stage; larger ones later — and the result (a 4x4-patch input region of 63x63 instead of 75x75 at r224), but we
# found no published per-block kernel list. This is our reconstruction: the two stride-1 blocks of the patch stage
# (blocks 1 and 3) become 1x1 depthwise (a 1x1 stride-2 conv would drop 3/4 of its input, so the stride-2 blocks
# keep 3x3), and every block after the patch stage uses 5x5. Backward walk over a 7x7 output patch:
# block4 (k3 s2) 15 -> block3 (k1) 15 -> block2 (k3 s2) 31 -> block1 (k1) 31 -> stem (k3 s2) 63.
MBV2_RD_KERNELS: tuple[int, ...] = (1, 3, 1, 3) + (5,) * 13


def mbv2_rd(width_mult: float = 1.0, resolution: int = 224, num_classes: int = 1000, in_channels: int = 3) -> Arch:
    """MobileNetV2 with its receptive field redistributed (MCUNetV2 MbV2-RD; see MBV2_RD_KERNELS)."""
    arch = mobilenetv2(width_mult, resolution, num_classes, in_channels, kernels=MBV2_RD_KERNELS, name="mbv2_rd")
    return arch
