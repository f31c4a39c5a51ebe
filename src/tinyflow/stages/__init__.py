"""Pipeline stages: functions `(cfg, context) -> context`, registered by name.

A built-in stage `foo` lives in `tinyflow.stages.foo` and registers itself with `@stage("foo")`; the module is
imported only when the stage runs, so a pipeline that never trains never imports torch. A third-party stage is
registered the same way from any module named as `module:function` in `stages:`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from tinyflow.context import RunContext
from tinyflow.errors import TinyflowError

StageFn = Callable[[Any, RunContext], RunContext]

_REGISTRY: dict[str, StageFn] = {}

# the order the full pipeline runs in (docs/design.md §2); `stages:` in the config picks from these
KNOWN_STAGES: tuple[str, ...] = ("space", "train", "search", "finetune", "quantize", "schedule", "deploy")


def stage(name: str) -> Callable[[StageFn], StageFn]:
    """Register a stage function under `name`."""

    def decorate(fn: StageFn) -> StageFn:
        _REGISTRY[name] = fn
        return fn

    return decorate


def get_stage(name: str) -> StageFn:
    """Find a stage by name (`space`, …) or by `module:function`; a clear error if there is none."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise TinyflowError(f"stages: cannot load '{name}' ({exc}). Give an importable module:function.") from None
    try:
        importlib.import_module(f"tinyflow.stages.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"tinyflow.stages.{name}":
            raise
    if name not in _REGISTRY:
        available = ", ".join(available_stages())
        raise TinyflowError(
            f"stages: unknown stage '{name}'. Available stages: {available}. "
            "Fix the `stages:` list in your config or experiment."
        )
    return _REGISTRY[name]


def available_stages() -> list[str]:
    """Built-in stages that exist in this installation, in pipeline order."""
    found = []
    for name in KNOWN_STAGES:
        try:
            get_stage_module = importlib.util.find_spec(f"tinyflow.stages.{name}")
        except ModuleNotFoundError:
            get_stage_module = None
        if get_stage_module is not None or name in _REGISTRY:
            found.append(name)
    return found + sorted(set(_REGISTRY) - set(found))
