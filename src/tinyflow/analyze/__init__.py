"""Analysis of one network (no training): plan, flash, MACs, per-layer profile; `python -m tinyflow.analyze`."""

from tinyflow.analyze.core import PATCH_KEYS, analyze
from tinyflow.analyze.networks import load_arch, mcunet, to_graph

__all__ = ["PATCH_KEYS", "analyze", "load_arch", "mcunet", "to_graph"]
