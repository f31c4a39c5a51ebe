"""Pipeline stages: functions `(cfg, context) -> context`, found by name in a registry.

The registry holds the built-in stages (a built-in `foo` lives in `tinyflow.stages.foo` and registers itself with
`@stage("foo")`; the module is imported only when the stage runs, so a pipeline that never trains never imports
torch) and the stages that installed distributions declare as entry points in the group `tinyflow.stages`
(`name = "module:function"`). A name in `stages:` is looked up there and nowhere else: no import string from a
config runs code (docs/design.md §2, §13).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from tinyflow.context import RunContext
from tinyflow.errors import TinyflowError

StageFn = Callable[[Any, RunContext], RunContext]

_REGISTRY: dict[str, StageFn] = {}

#: the entry-point group through which installed distributions add stages
ENTRY_POINT_GROUP = "tinyflow.stages"

# the order the full pipeline runs in (docs/design.md §2); `stages:` in the config picks from these
KNOWN_STAGES: tuple[str, ...] = ("space", "train", "search", "finetune", "quantize", "schedule", "deploy")


def stage(name: str) -> Callable[[StageFn], StageFn]:
    """Register a stage function under `name`."""

    def decorate(fn: StageFn) -> StageFn:
        _REGISTRY[name] = fn
        return fn

    return decorate


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get_stage(name: str) -> StageFn:
    """The stage registered as `name` (built-in or entry point); a clear error listing the stages if there is none."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in KNOWN_STAGES:
        importlib.import_module(f"tinyflow.stages.{name}")  # registers itself
        return _REGISTRY[name]
    declared = _entry_points().get(name)
    if declared is not None:
        try:
            fn = declared.load()
        except (ImportError, AttributeError) as exc:
            raise TinyflowError(
                f"stages: the stage '{name}' declared by an installed distribution ({declared.value}) cannot be "
                f"loaded ({exc}). Reinstall the distribution that provides it."
            ) from None
        _REGISTRY[name] = fn
        return fn
    available = ", ".join(available_stages())
    hint = (
        " A `module:function` string is not imported: declare your stage as an entry point in the group "
        f"`{ENTRY_POINT_GROUP}` of an installed distribution."
        if ":" in name
        else ""
    )
    raise TinyflowError(
        f"stages: unknown stage '{name}'. Available stages: {available}. Fix the `stages:` list in your config or "
        f"experiment.{hint}"
    )


def available_stages() -> list[str]:
    """Built-in stages of this installation (pipeline order), then entry-point and other registered ones."""
    found = [name for name in KNOWN_STAGES if importlib.util.find_spec(f"tinyflow.stages.{name}") is not None]
    return found + sorted((set(_REGISTRY) | set(_entry_points())) - set(found))
