"""Structured-config schemas registered with Hydra's ConfigStore, and checks OmegaConf cannot express."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from tinyflow.errors import ConfigError


class Core(Enum):
    """CPU cores tinyflow knows. The value is the display name."""

    cortex_m0plus = "Cortex-M0+"
    cortex_m3 = "Cortex-M3"
    cortex_m4 = "Cortex-M4"
    cortex_m7 = "Cortex-M7"
    cortex_m33 = "Cortex-M33"
    cortex_m55 = "Cortex-M55"
    xtensa_lx7 = "Xtensa LX7"
    riscv32 = "RISC-V (RV32)"


@dataclass
class DeviceSchema:
    """Fields every `conf/device/*.yaml` holds (validated at composition: types and core names)."""

    name: str = MISSING
    sram_kb: float = MISSING
    flash_kb: float = MISSING
    core: Core = MISSING
    clock_mhz: float = MISSING
    sram_reserve_kb: float = 0.0
    flash_reserve_kb: float = 0.0
    macs_per_cycle: float = 0.0
    latency_ms_per_mop: float = 0.0
    latency_intercept_ms: float = 0.0
    energy_mj_per_mop: float = 0.0
    power_mw: float = 0.0
    coefficient_source: str = ""


_POSITIVE = ("sram_kb", "flash_kb", "clock_mhz")
_NON_NEGATIVE = (
    "sram_reserve_kb",
    "flash_reserve_kb",
    "macs_per_cycle",
    "latency_ms_per_mop",
    "latency_intercept_ms",
    "energy_mj_per_mop",
    "power_mw",
)


def register_schemas() -> None:
    """Make `/schema/device` available to config files' defaults lists."""
    ConfigStore.instance().store(group="schema", name="device", node=DeviceSchema)


def validate_device(device: DictConfig | dict[str, Any]) -> None:
    """Range checks: sizes and clock positive, reserves smaller than the device. Raises ConfigError."""
    d = OmegaConf.to_container(device, resolve=True) if isinstance(device, DictConfig) else dict(device)
    name = d.get("name", "?")
    for key in _POSITIVE:
        value = d.get(key)
        if value == "???" or value is None:
            raise ConfigError(
                f"device.{key} is not set for device '{name}'. Give it on the command line, "
                f"e.g. `device=custom device.sram_kb=256 device.flash_kb=1024`."
            )
        if not isinstance(value, int | float) or value <= 0:
            raise ConfigError(
                f"device.{key} = {value!r} is invalid for device '{name}': it must be a positive number "
                f"({'kB' if key.endswith('_kb') else 'MHz'}). Fix it, e.g. `device.{key}=256`."
            )
    for key in _NON_NEGATIVE:
        value = d.get(key, 0.0)
        if not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"device.{key} = {value!r} is invalid for device '{name}': it must be ≥ 0.")
    for kind in ("sram", "flash"):
        if d.get(f"{kind}_reserve_kb", 0.0) >= d[f"{kind}_kb"]:
            raise ConfigError(
                f"device.{kind}_reserve_kb ({d[f'{kind}_reserve_kb']}) leaves no {kind} for the model on "
                f"'{name}' ({d[f'{kind}_kb']} kB). Lower device.{kind}_reserve_kb."
            )
