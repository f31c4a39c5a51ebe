"""Structured-config schemas registered with Hydra's ConfigStore, generated from the dataclasses they describe.

`/schema/device` (in every `conf/device/*.yaml` defaults list) gives composition-time type checks: numbers are
coerced to float (so logged params read `512.0`), an unknown `device.core` is refused with the list of cores.
Range checks live in `tinyflow.device.Device` alone.
"""

from __future__ import annotations

import dataclasses
import typing
from enum import Enum

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from tinyflow.device import CORES, Device

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
