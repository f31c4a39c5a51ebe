"""A microcontroller target: the `Device` dataclass (`conf/device/*.yaml`), validated here and nowhere else.

A leaf module: it imports no other tinyflow module but `tinyflow.errors`, so memory, cost, search and the
contracts can all depend on it. Flash has one meaning everywhere: a model's `flash_bytes` is the model alone
(weights + per-channel constants) and is compared with `Device.flash_budget_bytes` (flash − runtime reserve).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum
from typing import TYPE_CHECKING, Any

from tinyflow.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

#: CPU cores tinyflow knows: config name -> display name
CORES: dict[str, str] = {
    "cortex_m0plus": "Cortex-M0+",
    "cortex_m3": "Cortex-M3",
    "cortex_m4": "Cortex-M4",
    "cortex_m7": "Cortex-M7",
    "cortex_m33": "Cortex-M33",
    "cortex_m55": "Cortex-M55",
    "xtensa_lx7": "Xtensa LX7",
    "riscv32": "RISC-V (RV32)",
}
_REQUIRED = ("name", "sram_kb", "flash_kb", "core", "clock_mhz")
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


@dataclass(frozen=True)
class Device:
    """A microcontroller target. Sizes in kB as datasheets give them (1 kB = 1024 B here, as MCU docs do).

    Construction validates every field (`ConfigError` naming the field and the fix); `from_config` builds one
    from a `device` config node."""

    name: str
    sram_kb: float
    flash_kb: float
    core: str  # a key of CORES
    clock_mhz: float
    sram_reserve_kb: float = 0.0  # kept free for the user's application (the firmware's own scratch, I/O buffer,
    # runtime and stack are the overhead model's, tinyflow.memory.runtime_overhead, counted in every plan)
    flash_reserve_kb: float = 0.0  # runtime code (e.g. TF Lite Micro ~37 KB, MicroNets)
    macs_per_cycle: float = 0.0  # documented/derived throughput of int8 conv kernels, for cost models
    latency_ms_per_mop: float = 0.0  # MicroNets slope: ms per 1e6 ops (ops = 2·MACs); 0 = derive from clock
    latency_intercept_ms: float = 0.0
    energy_mj_per_mop: float = 0.0
    power_mw: float = 0.0
    coefficient_source: str = ""
    latency_fit: str = ""  # a core whose measured firmware fit gives the latency (tinyflow.cost.core_fits); "" none

    def __post_init__(self) -> None:
        _check(self)

    @property
    def sram_total_bytes(self) -> int:
        """The whole SRAM of the device (reserve included); a plan is compared with `sram_budget_bytes`."""
        return int(self.sram_kb * 1024)

    @property
    def flash_total_bytes(self) -> int:
        """The whole flash of the device (reserve included). Not `flash_bytes`: that name means a model's flash."""
        return int(self.flash_kb * 1024)

    @property
    def sram_budget_bytes(self) -> int:
        """SRAM for the plan: the arena + the firmware's overhead (`sram_total_bytes` of an analysis) must fit it."""
        return int((self.sram_kb - self.sram_reserve_kb) * 1024)

    @property
    def flash_budget_bytes(self) -> int:
        """Flash available to the model's weights (flash − reserve): what a model's `flash_bytes` is compared with."""
        return int((self.flash_kb - self.flash_reserve_kb) * 1024)

    @property
    def core_name(self) -> str:
        """The core's display name, e.g. `Cortex-M7`."""
        return CORES[self.core]

    @classmethod
    def from_config(cls, node: DictConfig | Mapping[str, Any]) -> Device:
        """The validated `Device` of a `device` config node (a DictConfig or a plain mapping)."""
        d = _plain(node)
        name = d.get("name", "?")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ConfigError(
                f"device.{unknown[0]} is not a device field (device '{name}'). Remove it or use one of: "
                f"{', '.join(sorted(known))}."
            )
        for key in _REQUIRED:
            if d.get(key) in (None, "???"):
                raise ConfigError(
                    f"device.{key} is not set for device '{name}'. Give it on the command line, "
                    f"e.g. `device=custom device.sram_kb=256 device.flash_kb=1024`."
                )
        core = d["core"]
        d["core"] = core.name if isinstance(core, Enum) else core  # the structured config's Enum member
        return cls(**d)


def _check(dev: Device) -> None:
    """Range checks: sizes and clock finite and positive, the rest finite and ≥ 0, reserves smaller than the
    device, a known core. NaN passes every comparison (`nan <= 0` is false), so finiteness is checked first."""
    name = dev.name
    for key in _POSITIVE:
        value = getattr(dev, key)
        if not _is_finite(value) or value <= 0:
            raise ConfigError(
                f"device.{key} = {value!r} is invalid for device '{name}': it must be a finite, positive number "
                f"({'kB' if key.endswith('_kb') else 'MHz'}). Fix it, e.g. `device.{key}=256`."
            )
    for key in _NON_NEGATIVE:
        value = getattr(dev, key)
        if not _is_finite(value) or value < 0:
            raise ConfigError(
                f"device.{key} = {value!r} is invalid for device '{name}': it must be a finite number ≥ 0. "
                f"Fix it, e.g. `device.{key}=0`."
            )
    for kind in ("sram", "flash"):
        _check_reserve(dev, kind)
    if dev.core not in CORES:
        raise ConfigError(
            f"device.core = {dev.core!r} is unknown for device '{name}'. Use one of: {', '.join(CORES)} "
            f"(e.g. `device.core=cortex_m7`)."
        )


def _check_reserve(dev: Device, kind: str) -> None:
    """A reserve must leave some of the memory to the model; when it cannot, the model does not fit this part."""
    reserve, total = getattr(dev, f"{kind}_reserve_kb"), getattr(dev, f"{kind}_kb")
    if reserve >= total:
        raise ConfigError(
            f"device.{kind}_reserve_kb ({reserve:g}) leaves no {kind} for the model on '{dev.name}' ({total:g} kB). "
            f"Lower device.{kind}_reserve_kb below {total:g}. If this reserve came from a firmware overflow hint, "
            f"the firmware's own buffers and code need more {kind} than the part has beside any model: choose a "
            f"device with more {kind} (`device=...` or `device.{kind}_kb=...`) or a smaller model."
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """A real number that is neither NaN nor ±infinity (nor an integer too large for a float)."""
    try:
        return _is_number(value) and math.isfinite(value)
    except OverflowError:
        return False


def _plain(node: Any) -> dict[str, Any]:
    """A config node as a plain dict (interpolations resolved, `???` left as is); omegaconf imported on use."""
    from omegaconf import DictConfig, OmegaConf

    d = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    assert isinstance(d, dict)
    return d
