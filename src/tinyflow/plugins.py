"""Build plugins from their config group option and check them against their Protocol."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from tinyflow.contracts import PROTOCOLS, iter_protocol_members
from tinyflow.device import Device
from tinyflow.errors import ConfigError
from tinyflow.memory.config import MemoryConfig


def _choice(cfg: DictConfig, group: str) -> str:
    """The option chosen for `group` (from Hydra's runtime choices when available)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices.get(group, "?"))
    except ValueError:  # not inside a Hydra app
        node = cfg.get(group)
        return str(node.get("name", "?")) if isinstance(node, DictConfig) else "?"


def check_protocol(obj: Any, group: str, option: str = "?") -> Any:
    """Raise ConfigError naming the group and option if `obj` lacks a member of the group's Protocol."""
    proto = PROTOCOLS[group]
    present = set(dir(obj))  # dir() does not evaluate properties (which may read data)
    missing = [m for m in iter_protocol_members(proto) if m not in present]
    if missing:
        raise ConfigError(
            f"{group}={option}: {type(obj).__module__}.{type(obj).__qualname__} is not a {proto.__name__} plugin; "
            f"it lacks {', '.join(missing)}. Point `_target_` in conf/{group}/{option}.yaml at a class that "
            f"implements tinyflow.contracts.{proto.__name__}."
        )
    return obj


def build_plugin(cfg: DictConfig, group: str, **kwargs: Any) -> Any:
    """Instantiate the plugin chosen for `group` (its node has `_target_`) and check its Protocol."""
    option = _choice(cfg, group)
    node = cfg.get(group)
    if node is None or "_target_" not in node:
        raise ConfigError(
            f"{group}: no plugin is configured (the `{group}` node has no `_target_`). Choose one with "
            f"`{group}=<option>` from conf/{group}/."
        )
    try:
        obj = instantiate(node, **kwargs, _convert_="partial")
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(f"{group}={option}: could not build the plugin: {cause}") from None
    return check_protocol(obj, group, option)


def build_device(cfg: DictConfig) -> Device:
    """The validated `Device` of the composed config (`Device.from_config` does the checks)."""
    return Device.from_config(cfg.device)


def build_memory(cfg: DictConfig) -> MemoryConfig:
    """The validated `MemoryConfig` of `cfg.memory` (`MemoryConfig.from_config` does the checks)."""
    return MemoryConfig.from_config(cfg.get("memory"))
