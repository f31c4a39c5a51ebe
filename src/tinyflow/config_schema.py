"""Structured-config schemas registered with Hydra's ConfigStore, generated from the dataclasses they describe.

`/schema/device` (in every `conf/device/*.yaml` defaults list) gives composition-time type checks: numbers are
coerced to float (so logged params read `512.0`), an unknown `device.core` is refused with the list of cores.
Range checks live in `tinyflow.device.Device` alone.

`validate_config` checks the whole composed config before a job's first stage (docs/design.md §13).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig

from tinyflow.device import CORES, Device
from tinyflow.validation import non_finite_problem

#: the core names as an Enum, for the schema's `core` field
Core = Enum("Core", {name: display for name, display in CORES.items()})  # type: ignore[misc]


def device_schema() -> type:
    """A dataclass with `Device`'s fields: `core` typed as `Core`, fields without a default set to MISSING."""
    hints = typing.get_type_hints(Device)
    specs = []
    for f in dataclasses.fields(Device):
        default = MISSING if f.default is dataclasses.MISSING else f.default
        specs.append((f.name, Core if f.name == "core" else hints[f.name], dataclasses.field(default=default)))
    return dataclasses.make_dataclass("DeviceSchema", specs)


def register_schemas() -> None:
    """Make `/schema/device` available to config files' defaults lists."""
    ConfigStore.instance().store(group="schema", name="device", node=device_schema())


# ---------------------------------------------------------------- validation of the composed config
#
# A job checks every value before its first stage runs (`validate_config`), so a mistake costs seconds, not the
# training before the stage that reads it. Each group has a schema: the core groups the table below; a plugin group
# the type hints of its `_target_`'s constructor (a plugin's constructor is its schema; keys it does not take are
# refused unless it takes **options) plus the ranges in `RANGES`.


@dataclasses.dataclass(frozen=True)
class Field:
    """One config value: its types (`None` allowed when `optional`), bounds and choices."""

    types: tuple[type, ...]
    optional: bool = False
    min: float | None = None
    max: float | None = None
    below: float | None = None  # exclusive upper bound
    above: float | None = None  # exclusive lower bound
    choices: tuple[str, ...] | None = None
    items: Field | None = None  # for lists: the schema of each item


INT = (int,)
NUM = (int, float)
_F = Field

#: the schema of the core groups (top-level keys under "")
CORE: dict[str, dict[str, Field]] = {
    "": {
        "seed": _F(INT, min=0),
        "resume": _F((bool, str), optional=True),
        "stages": _F((list,), items=_F((str,))),
        "threads": _F((int, str), optional=True),  # auto or a count (tinyflow.threads.parse_setting)
    },
    "space": {
        "widths": _F((list,), items=_F(NUM, above=0, max=4)),
        "resolutions": _F((list,), items=_F(INT, min=8)),
        "samples_per_cell": _F(INT, min=1),
        "seed": _F(INT, min=0),
        "min_fit_share": _F(NUM, min=0, max=1),
        "resolution_range": _F((bool,)),
        "progress": _F((bool,)),
    },
    "finetune": {
        "from_supernet": _F((bool,)),
        "epochs": _F(INT, min=1),
        "optimizer": _F((str,), choices=("sgd", "adamw")),
        "lr": _F(NUM, above=0),
        "weight_decay": _F(NUM, min=0),
        "momentum": _F(NUM, min=0, below=1),
        "nesterov": _F((bool,)),
        "label_smoothing": _F(NUM, min=0, below=1),
        "grad_clip": _F(NUM, optional=True, above=0),
        "warmup_epochs": _F(NUM, min=0),
        "min_lr_ratio": _F(NUM, min=0, max=1),
        "dropout": _F(NUM, min=0, below=1),
        "seed": _F(INT, min=0),
        "limit_train_batches": _F(NUM, optional=True, above=0),
        "limit_val_batches": _F(NUM, optional=True, above=0),
        "check_val_every_n_epoch": _F(INT, min=1),
        "deterministic": _F((bool,)),
        "save_checkpoints": _F((bool,)),
    },
    "cache": {"train": _F((bool,)), "search": _F((bool,)), "dir": _F((str,))},
}

#: ranges of plugin options common to a group's plugins (types come from the plugin's constructor); a plugin
#: declares its own options' ranges in a class attribute `option_ranges` (`plugin_ranges`)
RANGES: dict[str, dict[str, Field]] = {
    "trainer": {
        "seed": _F(INT, min=0),
        "epochs": _F(INT, optional=True, min=1),
        "epochs_at_resolution": _F(INT, optional=True, min=1),  # tinyflow.training.budget
        "batch_size": _F(INT, optional=True, min=2),
        "devices": _F(INT, min=1),
        "num_nodes": _F(INT, min=1),
        "lr": _F(NUM, above=0),
        "weight_decay": _F(NUM, min=0),
        "momentum": _F(NUM, min=0, below=1),
        "label_smoothing": _F(NUM, min=0, below=1),
        "warmup_epochs": _F(NUM, min=0),
        "dropout": _F(NUM, min=0, below=1),
        "grad_clip": _F(NUM, optional=True, above=0),
    },
    "data": {"batch_size": _F(INT, min=1), "seed": _F(INT, min=0), "num_workers": _F(INT, min=0)},
    "strategy": {"n_evaluations": _F(INT, optional=True, min=1), "population": _F(INT, min=2)},
}

_PLUGIN_GROUPS = ("tracking", "data", "search_space", "trainer", "backend", "strategy", "scheduler", "cost_model")


def _type_name(types: tuple[type, ...]) -> str:
    if types == NUM:
        return "a number"
    names = {int: "an integer", float: "a number", bool: "true/false", str: "a string", list: "a list"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_value(where: str, value: Any, spec: Field, problems: list[str]) -> None:
    if value is None:
        if not spec.optional:
            problems.append(f"{where} must be set (it is null); give {_type_name(spec.types)}")
        return
    types = spec.types
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        problems.append(f"{where} = {value!r} must be {_type_name(types)}")
        return
    if (problem := non_finite_problem(where, value)) is not None:  # nan <= 0 is False: no range catches it
        problems.append(problem)
        return
    if isinstance(value, list) and spec.items is not None:
        for i, item in enumerate(value):
            _check_value(f"{where}[{i}]", item, spec.items, problems)
        return
    if spec.choices is not None and value not in spec.choices:
        problems.append(f"{where} = {value!r} must be one of {', '.join(spec.choices)}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.min is not None and value < spec.min:
            problems.append(f"{where} = {value!r} must be at least {spec.min:g}")
        if spec.max is not None and value > spec.max:
            problems.append(f"{where} = {value!r} must be at most {spec.max:g}")
        if spec.above is not None and value <= spec.above:
            problems.append(f"{where} = {value!r} must be greater than {spec.above:g}")
        if spec.below is not None and value >= spec.below:
            problems.append(f"{where} = {value!r} must be less than {spec.below:g}")


def _field_of_hint(hint: Any) -> Field | None:
    """A `Field` of a constructor's type hint (None where the hint says nothing checkable, e.g. Any)."""
    if hint is inspect.Parameter.empty or hint is typing.Any:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        optional = type(None) in args
        kinds: list[type] = []
        for arg in args:
            if arg is type(None):
                continue
            inner = _field_of_hint(arg)
            if inner is None:
                return None
            kinds.extend(inner.types)
        return Field(tuple(dict.fromkeys(kinds)), optional=optional)
    if origin in (list, tuple) or hint in (list, tuple):
        return Field((list,))
    if origin is dict or hint is dict:
        return Field((dict,))
    if hint in (int, float, bool, str):
        return Field(NUM if hint is float else (hint,))
    return None


def plugin_schema(target: str) -> tuple[dict[str, Field], bool]:
    """(`key -> Field` from the constructor's type hints of `target`, whether it takes any other key (**options))."""
    from hydra.utils import get_class, get_method

    obj: Any = None
    try:
        obj = get_class(target)
        init = obj.__init__
    except Exception:
        init = get_method(target)
    sig = inspect.signature(init)
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an unresolvable forward reference: check what resolves
        hints = {}
    schema: dict[str, Field] = {}
    open_ended = False
    for name, param in sig.parameters.items():
        if name == "self":
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            open_ended = True
            continue
        spec = _field_of_hint(hints.get(name, inspect.Parameter.empty))
        if spec is not None:
            if param.default is None:
                spec = dataclasses.replace(spec, optional=True)
            schema[name] = spec
        else:
            schema[name] = Field((object,), optional=True)
    for name, bounds in plugin_ranges(obj).items():
        if name in schema:
            schema[name] = dataclasses.replace(schema[name], **bounds)
    return schema, open_ended


_BOUNDS = ("min", "max", "above", "below", "choices")


def plugin_ranges(plugin: Any) -> dict[str, dict[str, Any]]:
    """The ranges a plugin class declares for its own options: `option_ranges = {"runs": {"min": 1}, ...}`
    (keys: min, max, above, below, choices). Core names no plugin's options."""
    declared = getattr(plugin, "option_ranges", None) or {}
    out: dict[str, dict[str, Any]] = {}
    for name, bounds in dict(declared).items():
        unknown = set(bounds) - set(_BOUNDS)
        if unknown:
            raise TypeError(f"{plugin.__name__}.option_ranges['{name}']: unknown bound {sorted(unknown)} ({_BOUNDS})")
        out[str(name)] = {k: (tuple(v) if k == "choices" else v) for k, v in bounds.items()}
    return out


def _check_group(where: str, node: Any, schema: dict[str, Field], closed: bool, problems: list[str]) -> None:
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node
    if not isinstance(values, dict):
        problems.append(f"{where or 'the config'} must be a mapping, got {values!r}")
        return
    for key, value in values.items():
        if key.startswith("_") and key.endswith("_"):
            continue
        name = f"{where}.{key}" if where else str(key)
        spec = schema.get(str(key))
        if spec is None:
            if closed:
                problems.append(f"{name}: unknown key (known: {', '.join(sorted(schema))})")
            continue
        if spec.types != (object,):
            _check_value(name, value, spec, problems)


def validate_config(cfg: DictConfig) -> None:
    """ConfigError listing every value of `cfg` that its group's schema refuses (type, range, choice, unknown key)."""
    from omegaconf import OmegaConf

    from tinyflow.errors import ConfigError

    problems: list[str] = []
    top = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    _check_group("", {k: top[k] for k in CORE[""] if k in top}, CORE[""], False, problems)
    for group in ("space", "finetune", "cache"):
        if cfg.get(group) is not None:
            _check_group(group, cfg.get(group), CORE[group], True, problems)
    for group in _PLUGIN_GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        try:
            schema, open_ended = plugin_schema(str(node._target_))
        except Exception as exc:  # build_plugin reports a target that cannot be imported, with its own message
            problems.append(f"{group}._target_ = {node._target_!r} cannot be loaded ({type(exc).__name__}: {exc})")
            continue
        for key, spec in RANGES.get(group, {}).items():
            if key in schema or open_ended:
                base = schema.get(key)
                schema[key] = (
                    spec
                    if base is None or base.types == (object,)
                    else dataclasses.replace(spec, optional=spec.optional or base.optional)
                )
        _check_group(group, node, schema, not open_ended, problems)
    if problems:
        raise ConfigError(
            "the config has invalid values: " + "; ".join(problems) + ". Fix them on the command line or in the "
            "config file (nothing has run yet)."
        )
