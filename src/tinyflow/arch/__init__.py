"""Architecture genomes and spaces (pure Python, no torch)."""

from tinyflow.arch.genome import Arch, Block, make_divisible
from tinyflow.arch.space import ArchOutsideSpaceError, MBConvSpace, StageSpec
from tinyflow.arch.zoo import mobilenetv2

__all__ = ["Arch", "ArchOutsideSpaceError", "Block", "MBConvSpace", "StageSpec", "make_divisible", "mobilenetv2"]
