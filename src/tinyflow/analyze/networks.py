"""Networks for `python -m tinyflow.analyze` and the `schedule` stage: an `Arch` or an ONNX file -> IR."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinyflow.arch.genome import Arch
from tinyflow.arch.space import ArchOutsideSpaceError, MBConvSpace
from tinyflow.errors import ConfigError
from tinyflow.ir.graph import Graph


def mcunet(
    width_mult: float = 1.0,
    resolution: int = 160,
    depths: Sequence[int] | None = None,
    kernels: Sequence[int] | None = None,
    expands: Sequence[int] | None = None,
    arch: str | None = None,
    seed: int | None = None,
    num_classes: int = 1000,
) -> Arch:
    """An arch of the MCUNet / OFA MBConv space.

    `arch`: a JSON file holding an `Arch` (`Arch.to_json()`) or a run's `context.json` (its best arch) — wins over
    the rest. Else the genome lists (depth per stage, kernel and expand per slot); lists left null come from a
    random sample with `seed`, or from the space's largest arch when `seed` is null too.
    """
    if arch:
        return load_arch(arch)
    space = MBConvSpace(width_mult=float(width_mult), resolution=int(resolution), num_classes=int(num_classes))
    import random

    base = space.sample_genome(random.Random(seed)) if seed is not None else None
    biggest = space.max_arch().genome
    pick = base or biggest
    genome = {
        "depths": list(depths) if depths is not None else pick["depths"],
        "kernels": list(kernels) if kernels is not None else pick["kernels"],
        "expands": list(expands) if expands is not None else pick["expands"],
    }
    try:
        return space.build(genome["depths"], genome["kernels"], genome["expands"])
    except ArchOutsideSpaceError as exc:
        raise ConfigError(f"network (mcunet): {exc}. Fix network.depths / network.kernels / network.expands.") from None


def load_arch(path: str | Path) -> Arch:
    """An `Arch` from an arch JSON file or from a run's `context.json` (key `arch`)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"network.arch: '{p}' is not a file; give an arch JSON or a run's context.json")
    try:
        data: Any = json.loads(p.read_text())
        if isinstance(data, dict) and "blocks" not in data and isinstance(data.get("arch"), dict):
            data = data["arch"]
        return Arch.from_dict(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"network.arch: '{p}' does not hold an arch ({type(exc).__name__}: {exc})") from None


def check_network(network: Any) -> Arch | Graph:
    """What a network config built: an `Arch` (the plain network of it) or an IR graph (e.g. an imported ONNX)."""
    if isinstance(network, Arch | Graph):
        return network
    raise ConfigError(
        f"network: its _target_ built a {type(network).__name__}; it must build a tinyflow Arch or an IR Graph"
    )


def to_graph(network: Arch | Graph) -> Graph:
    """The IR of what a network config built (an Arch is lowered with `from_arch`)."""
    network = check_network(network)
    if isinstance(network, Graph):
        return network
    from tinyflow.ir.from_arch import from_arch

    return from_arch(network)


def build_network(node: Any) -> Arch | Graph:
    """Instantiate a `network` config node (an Arch or an IR graph); a TinyflowError inside surfaces as itself."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from tinyflow.errors import TinyflowError

    missing = [k for k in node if OmegaConf.is_missing(node, k)] if OmegaConf.is_config(node) else []
    if missing:
        raise ConfigError(
            f"network.{missing[0]}: not set; this network needs it, e.g. `network.{missing[0]}=model_int8.onnx` "
            "for a model file."
        )
    try:
        built = instantiate(node, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, TinyflowError):
            raise cause from None
        raise ConfigError(f"network: cannot build it from its config ({cause or exc})") from None
    return check_network(built)
