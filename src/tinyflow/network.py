"""The deployed network: one typed description of what a run deploys (kind, arch, kind-specific options).

A `DeployedNetwork` turns into its IR (`graph`, no torch) and its PyTorch model (`build_model`, imports torch)
through a registry of kinds. Core registers two: `static` (a plain MBConv `StaticNet` of the arch) and `rnnpool`
(the arch's early part rewritten into RNNPool with the resolved `RNNPoolOptions`, an `RNNPoolNet`). A plugin may
register more with `register_kind`. The run context holds it as a dict (`RunContext.network`), `model.pt` records
the same dict, and a scheduler says which network it deploys for a given one (`Scheduler.network`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tinyflow.arch.genome import Arch
from tinyflow.errors import ConfigError

if TYPE_CHECKING:  # keep this module importable without torch
    from tinyflow.ir.graph import Graph

GraphFn = Callable[["DeployedNetwork", int], "Graph"]
ModelFn = Callable[["DeployedNetwork", float], Any]

_KINDS: dict[str, tuple[GraphFn, ModelFn]] = {}


def register_kind(kind: str, graph_fn: GraphFn, model_fn: ModelFn) -> None:
    """Register a network kind: `graph_fn(net, batch) -> Graph` and `model_fn(net, dropout) -> nn.Module`."""
    _KINDS[kind] = (graph_fn, model_fn)


def registered_kinds() -> list[str]:
    return sorted(_KINDS)


def _kind(kind: str) -> tuple[GraphFn, ModelFn]:
    try:
        return _KINDS[kind]
    except KeyError:
        raise ConfigError(
            f"network kind '{kind}' is not registered (known: {registered_kinds()}); a plugin that deploys another "
            "kind registers it with tinyflow.network.register_kind."
        ) from None


@dataclass(frozen=True)
class DeployedNetwork:
    """What is deployed: `kind` ("static", "rnnpool" or a registered kind), `arch` (`Arch.to_dict()`) and the
    kind's resolved options (JSON-ready)."""

    kind: str
    arch: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:  # JSON-ready (tuples as lists), so a round trip compares equal
        object.__setattr__(self, "arch", json.loads(json.dumps(self.arch)))
        object.__setattr__(self, "options", json.loads(json.dumps(self.options)))

    @classmethod
    def plain(cls, arch: Arch) -> DeployedNetwork:
        """The MBConv network of `arch` as it is (kind `static`)."""
        return cls("static", arch.to_dict())

    def to_arch(self) -> Arch:
        return Arch.from_dict(self.arch)

    @property
    def name(self) -> str:
        base = str(self.arch.get("name", "arch"))
        return base if self.kind == "static" else f"{base}-{self.kind}"

    def graph(self, batch: int = 1) -> Graph:
        """The IR of this network (no torch)."""
        return _kind(self.kind)[0](self, batch)

    def build_model(self, dropout: float = 0.0) -> Any:
        """The PyTorch module of this network, freshly initialised (imports torch)."""
        return _kind(self.kind)[1](self, dropout)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "arch": dict(self.arch), "options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeployedNetwork:
        unknown = set(data) - {"kind", "arch", "options"}
        if unknown or "kind" not in data or "arch" not in data:
            raise ConfigError(
                f"a deployed network is {{kind, arch[, options]}}, got keys {sorted(data)}; the run context or "
                "model.pt that holds it was written by another tinyflow version."
            )
        return cls(str(data["kind"]), dict(data["arch"]), dict(data.get("options") or {}))


# ---------------------------------------------------------------- core kinds
def _static_graph(net: DeployedNetwork, batch: int) -> Graph:
    from tinyflow.ir.from_arch import from_arch

    return from_arch(net.to_arch(), batch=batch)


def _static_model(net: DeployedNetwork, dropout: float) -> Any:
    from tinyflow.nn.static import StaticNet

    return StaticNet(net.to_arch(), dropout=dropout)


def _rnnpool_arch(net: DeployedNetwork) -> Any:
    from tinyflow.arch.rnnpool import RNNPoolOptions, rewrite

    return rewrite(net.to_arch(), RNNPoolOptions.from_config(net.options))


def _rnnpool_graph(net: DeployedNetwork, batch: int) -> Graph:
    from tinyflow.ir.rnnpool import rnnpool_graph

    return rnnpool_graph(_rnnpool_arch(net), batch=batch)


def _rnnpool_model(net: DeployedNetwork, dropout: float) -> Any:
    from tinyflow.nn.rnnpool_net import RNNPoolNet

    return RNNPoolNet(_rnnpool_arch(net), dropout=dropout)


register_kind("static", _static_graph, _static_model)
register_kind("rnnpool", _rnnpool_graph, _rnnpool_model)
