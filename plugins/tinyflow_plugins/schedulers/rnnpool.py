"""The `rnnpool` scheduler: rewrites the early high-resolution part of an MBConv network into RNNPool, and plans
the result with stem conv + RNNPool run patch by patch (`tinyflow.memory.rnnpool_plan`).

Unlike `layer` and `patch`, it changes the network: `network(net)` rewrites a plain (`static`) network into an
`rnnpool` one with this scheduler's options (`tinyflow.network.DeployedNetwork`, whose `graph()` is the IR and
`build_model()` the `RNNPoolNet` to train). `plan` takes the graph of that network (one that holds the rnnpool op);
an arch graph (`tinyflow.ir.from_arch`) is rewritten first.
"""

from __future__ import annotations

from typing import Any

from tinyflow.arch.genome import Arch
from tinyflow.arch.rnnpool import RNNPoolOptions, rewrite
from tinyflow.contracts import MemoryConfig, SchedulerBase
from tinyflow.errors import ConfigError
from tinyflow.ir.graph import Graph
from tinyflow.memory.plan import ExecutionPlan
from tinyflow.memory.rnnpool_plan import rnnpool_plan
from tinyflow.network import DeployedNetwork


class RNNPoolScheduler(SchedulerBase):
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

    def network(self, net: DeployedNetwork) -> DeployedNetwork:
        """The RNNPool network this scheduler deploys for `net`: a `static` net rewritten with this scheduler's
        options (resolved: `cut` a block index, pairs as lists); an `rnnpool` net as it is (its own options)."""
        if net.kind == "rnnpool":
            return net
        if net.kind != "static":
            raise ConfigError(
                f"scheduler=rnnpool rewrites a plain MBConv network (kind 'static'), not one of kind '{net.kind}'."
            )
        return DeployedNetwork("rnnpool", dict(net.arch), rewrite(net.to_arch(), self.options).options())

    def plan(self, graph: Graph, memory: MemoryConfig) -> ExecutionPlan:
        """Plan `graph`; a graph without an rnnpool op is first rewritten (`network`) from the arch it was built
        from (`tinyflow.ir.from_arch`)."""
        if not any(n.op == "rnnpool" for n in graph):
            graph = self._rewritten(graph)
        return rnnpool_plan(graph, memory)

    def _rewritten(self, graph: Graph) -> Graph:
        arch = graph.meta.get("arch")
        if not isinstance(arch, Arch):
            raise ConfigError(
                f"scheduler=rnnpool: graph '{graph.name}' has no rnnpool op and no arch to rewrite (imported "
                "graphs cannot be rewritten); build the graph from an arch (tinyflow.ir.from_arch) or use "
                "scheduler=layer / scheduler=patch."
            )
        batch = graph[graph.inputs[0]].shape[0] if graph.inputs else 1
        return self.network(DeployedNetwork.plain(arch)).graph(batch=batch)
