"""Build plugins from their config group option and check them against their Protocol.

Only code that is installed as tinyflow or a tinyflow plugin runs: a `_target_` must name a module of `tinyflow`,
`tinyflow_plugins` or a distribution's `tinyflow.plugins` entry point, and the command line cannot set `_target_`
(nor `_args_` and the other instantiation keys, nor Hydra callbacks) — code comes from config files that ship with
installed plugins, values from the command line (docs/design.md §13).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

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


#: keys Hydra's `instantiate` acts on: whoever sets them chooses what code runs, and with which arguments
CODE_KEYS = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_")
_OVERRIDE_KEY = re.compile(r"^[~+]{0,2}([^=]+?)(@[^=]*)?=")


def allowed_roots() -> frozenset[str]:
    """Top-level packages whose code a `_target_` may name: tinyflow's and those of installed plugins."""
    return _allowed_roots(tuple(sys.path))


@cache
def _allowed_roots(search_path: tuple[str, ...]) -> frozenset[str]:
    # keyed on sys.path: a plugin whose folder joins the path later (a test, a notebook) is seen then
    roots = {"tinyflow", "tinyflow_plugins"}
    for ep in entry_points(group="tinyflow.plugins"):
        roots.add(ep.value.split(":")[0].split(".")[0])
    return frozenset(roots)


def refuse_code_overrides(overrides: Iterable[str]) -> None:
    """ConfigError when a command-line override sets `_target_` / `_args_` / ... or a Hydra callback: those choose
    the code that runs, and must come from an installed plugin's config file (`group=option`)."""
    for override in overrides:
        match = _OVERRIDE_KEY.match(str(override))
        if match is None:
            continue
        key = match.group(1).strip()
        parts = key.split(".")
        if any(part in CODE_KEYS for part in parts) or key.startswith("hydra.callbacks"):
            group = parts[0]
            raise ConfigError(
                f"`{override}`: the command line cannot set `{key}` — it chooses which code runs. Pick one of the "
                f"installed options instead (`{group}=<option>`, the files in conf/{group}/ or a plugin's "
                f"conf/{group}/), or ship a config file in a plugin package (entry point `tinyflow.plugins`)."
            )


def check_targets(node: Any, where: str) -> None:
    """ConfigError when a `_target_` in `node` (at any depth) names code outside tinyflow and its installed
    plugins (`allowed_roots`)."""
    if isinstance(node, DictConfig | dict):
        target = node.get("_target_")
        if target is not None:
            root = str(target).split(".")[0]
            if root not in allowed_roots():
                raise ConfigError(
                    f"{where}._target_ = {target!r}: not code of tinyflow or an installed tinyflow plugin "
                    f"({', '.join(sorted(allowed_roots()))}). Install the plugin that provides it (entry point "
                    "`tinyflow.plugins`) and choose its config option."
                )
        for key, value in node.items():
            if key != "_target_":
                check_targets(value, f"{where}.{key}")
    elif isinstance(node, ListConfig | list | tuple):
        for i, value in enumerate(node):
            check_targets(value, f"{where}[{i}]")


def _task_overrides(cfg: DictConfig) -> list[str]:
    """The job's command-line overrides (from the config's `hydra` node or the running HydraConfig)."""
    try:
        node = cfg.get("hydra")
    except Exception:
        node = None
    if isinstance(node, DictConfig) and node.get("overrides") is not None:
        return list(node.overrides.get("task") or [])
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not inside a Hydra app
        return []


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
    refuse_code_overrides(_task_overrides(cfg))
    check_targets(node, group)
    check_options(node, group, option, kwargs)
    try:
        obj = instantiate(node, **kwargs, _convert_="partial")
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(f"{group}={option}: could not build the plugin: {cause}") from None
    return check_protocol(obj, group, option)


def check_options(node: DictConfig, group: str, option: str, kwargs: dict[str, Any] | None = None) -> None:
    """ConfigError, one paragraph, when the config (or `kwargs`) gives the plugin an option its constructor does
    not take (a plugin declares its options as keywords; one that takes `**options` accepts any)."""
    from tinyflow.config_schema import plugin_schema

    try:
        schema, open_ended = plugin_schema(str(node._target_))
    except Exception:  # a target that cannot be loaded: instantiate reports it below
        return
    if open_ended:
        return
    given = [str(k) for k in node if not (str(k).startswith("_") and str(k).endswith("_"))] + list(kwargs or {})
    unknown = [k for k in dict.fromkeys(given) if k not in schema]
    if unknown:
        names = ", ".join(f"`{group}.{k}`" for k in unknown)
        raise ConfigError(
            f"{group}={option}: {names} {'is not an option' if len(unknown) == 1 else 'are not options'} of "
            f"{node._target_} (its options: {', '.join(sorted(schema)) or 'none'}). Remove "
            f"{'it' if len(unknown) == 1 else 'them'} from the command line or the config file, or choose the "
            f"{group} that takes {'it' if len(unknown) == 1 else 'them'}."
        )


def build_device(cfg: DictConfig) -> Device:
    """The validated `Device` of the composed config (`Device.from_config` does the checks)."""
    return Device.from_config(cfg.device)


def build_memory(cfg: DictConfig) -> MemoryConfig:
    """The validated `MemoryConfig` of `cfg.memory` (`MemoryConfig.from_config` does the checks)."""
    return MemoryConfig.from_config(cfg.get("memory"))
