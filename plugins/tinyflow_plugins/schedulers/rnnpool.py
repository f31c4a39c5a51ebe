"""The `rnnpool` scheduler: rewrites the early high-resolution part of an MBConv network into RNNPool, and plans
the result with stem conv + RNNPool run patch by patch (`tinyflow.memory.rnnpool_plan`).

Unlike `layer` and `patch`, it changes the network: `rewrite(arch)` gives the `RNNPoolArch`, `graph(arch)` its
IR and `build_model(arch)` the PyTorch `RNNPoolNet` to train (`model_builder` hands that to a trainer). `plan`
accepts an arch graph (`tinyflow.ir.from_arch`: it is rewritten with this scheduler's options) or a graph that
already holds the rnnpool op (`tinyflow.ir.rnnpool.rnnpool_graph`: planned as it is).
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Any

from tinyflow.arch.genome import Arch
from tinyflow.arch.rnnpool import RNNPoolArch, RNNPoolOptions, rewrite
from tinyflow.contracts import MemoryConfig
from tinyflow.errors import ConfigError
from tinyflow.ir.graph import Graph
from tinyflow.ir.rnnpool import rnnpool_graph
from tinyflow.memory.plan import ExecutionPlan
from tinyflow.memory.rnnpool_plan import rnnpool_plan


class RNNPoolScheduler:
    """`scheduler=rnnpool`: options are the fields of `tinyflow.arch.rnnpool.RNNPoolOptions`."""

    name = "rnnpool"

    def __init__(
        self,
        cut: int | str = "auto",
        patch: Any = 6,
        stride: Any = 4,
        hidden1: int = 8,
        hidden2: int = 8,
        padding: Any = None,
        stem_channels: int | None = None,
        cell: str = "fastgrnn",
    ):
        self.options = RNNPoolOptions.from_config(
            {
                "cut": cut,
                "patch": patch,
                "stride": stride,
                "hidden1": hidden1,
                "hidden2": hidden2,
                "padding": padding,
                "stem_channels": stem_channels,
                "cell": cell,
            }
        )

    def rewrite(self, arch: Arch) -> RNNPoolArch:
        return rewrite(arch, self.options)

    def graph(self, arch: Arch, batch: int = 1) -> Graph:
        return rnnpool_graph(self.rewrite(arch), batch=batch)

    def build_model(self, arch: Arch, dropout: float = 0.0) -> Any:
        """The trainable `RNNPoolNet` of `arch` (imports torch)."""
        from tinyflow.nn.rnnpool_net import RNNPoolNet

        return RNNPoolNet(self.rewrite(arch), dropout=dropout)

    @property
    def model_builder(self) -> Any:
        """`builder(arch, dropout=...) -> nn.Module`, for a trainer that takes a model builder."""
        return partial(rnnpool_model, **asdict(self.options))

    def plan(self, graph: Graph, memory: MemoryConfig) -> ExecutionPlan:
        return rnnpool_plan(self.network_graph(graph), memory)

    def network_graph(self, graph: Graph) -> Graph:
        """The IR of the network this scheduler runs: `graph` rewritten (or as it is when it holds rnnpool).
        Callers that cost the network (flash, params) use this instead of the graph they passed in."""
        if not any(n.op == "rnnpool" for n in graph):
            arch = graph.meta.get("arch")
            if not isinstance(arch, Arch):
                raise ConfigError(
                    f"scheduler=rnnpool: graph '{graph.name}' has no rnnpool op and no arch to rewrite (imported "
                    "graphs cannot be rewritten); build the graph from an arch (tinyflow.ir.from_arch) or use "
                    "scheduler=layer / scheduler=patch."
                )
            batch = graph[graph.inputs[0]].shape[0] if graph.inputs else 1
            graph = self.graph(arch, batch=batch)
        return graph


def rnnpool_model(arch: Arch, dropout: float = 0.0, **options: Any) -> Any:
    """`RNNPoolNet` of `arch` rewritten with `options` (RNNPoolOptions fields). A trainer's model builder:

    trainer:
      model_builder: {_target_: tinyflow_plugins.schedulers.rnnpool.rnnpool_model, _partial_: true, stem_channels: 8}
    """
    from tinyflow.nn.rnnpool_net import RNNPoolNet

    return RNNPoolNet(rewrite(arch, RNNPoolOptions.from_config(options)), dropout=dropout)
