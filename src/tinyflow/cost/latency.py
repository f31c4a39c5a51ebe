"""MicroNets-style latency and energy: linear in op count (ops = 2·MACs), per-device coefficients.

MicroNets (Banbury et al., arXiv 2010.11267) measured latency and energy on Cortex-M4/M7 boards to be linear
in ops for models of one backbone (r² 0.95–0.99). The coefficients live in `conf/device/*.yaml`:
`latency_ms_per_mop` (slope, ms per 1e6 ops), `latency_intercept_ms`, `energy_mj_per_mop`, `power_mw`.
Precedence: a slope set in the device (`latency_ms_per_mop`, e.g. fitted on the user's own board) wins; else the
device's `latency_fit` names a core whose fit of tinyflow's firmware was measured on the emulator
(`tinyflow.cost.core_fits`: instructions per MAC × assumed CPI / clock); else the slope is derived from the clock
and `macs_per_cycle`: 1e6 ops = 5e5 MACs take 5e5 / (macs_per_cycle · clock_hz) s = 500 / (macs_per_cycle ·
clock_mhz) ms. Energy with no slope of its own is power × latency.
"""

from __future__ import annotations

from tinyflow.contracts import Device
from tinyflow.cost.core_fits import core_fit
from tinyflow.errors import ConfigError


def ops_of(macs: int) -> int:
    return 2 * macs


def latency_slope(device: Device) -> float:
    """ms per 1e6 ops on `device` (measured, or derived from clock × MACs/cycle)."""
    if device.latency_ms_per_mop > 0:
        return device.latency_ms_per_mop
    if device.latency_fit:
        return core_fit(device.latency_fit).latency_ms_per_mop(device.clock_mhz)
    if device.macs_per_cycle > 0 and device.clock_mhz > 0:
        return 500.0 / (device.macs_per_cycle * device.clock_mhz)
    raise ConfigError(
        f"device '{device.name}': no latency coefficients — set device.latency_ms_per_mop, or "
        "device.macs_per_cycle and device.clock_mhz so the slope can be derived"
    )


def latency_intercept(device: Device) -> float:
    """ms of a zero-MAC inference: the device's own intercept, or its core fit's."""
    if device.latency_ms_per_mop > 0 or not device.latency_fit:
        return device.latency_intercept_ms
    return core_fit(device.latency_fit).intercept_ms(device.clock_mhz)


def latency_source(device: Device) -> str:
    """Where `device`'s latency coefficients come from, in words (the device file's own note wins)."""
    if device.coefficient_source:
        return device.coefficient_source
    if device.latency_ms_per_mop > 0:
        return "latency_ms_per_mop set in the device"
    if device.latency_fit:
        return core_fit(device.latency_fit).describe(device.clock_mhz)
    return "derived from clock_mhz x macs_per_cycle (no measurement)"


def latency_ms(macs: int, device: Device) -> float:
    return latency_intercept(device) + latency_slope(device) * ops_of(macs) / 1e6


def energy_mj(macs: int, device: Device) -> float:
    if device.energy_mj_per_mop > 0:
        return device.energy_mj_per_mop * ops_of(macs) / 1e6
    if device.power_mw > 0:
        return device.power_mw * latency_ms(macs, device) / 1e3  # mW · ms = µJ; /1e3 -> mJ
    raise ConfigError(
        f"device '{device.name}': no energy coefficients — set device.energy_mj_per_mop or device.power_mw"
    )
