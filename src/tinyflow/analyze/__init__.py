"""Analysis of one network (no training): plan, flash, MACs, per-layer profile; `python -m tinyflow.analyze`."""

from tinyflow.analyze.core import analyze
from tinyflow.analyze.networks import load_arch, mcunet, to_graph

__all__ = ["analyze", "load_arch", "mcunet", "to_graph"]
