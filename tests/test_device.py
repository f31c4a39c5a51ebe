"""`tinyflow.device.Device`: one validation (construction / `from_config`), one schema generated from its fields."""

from __future__ import annotations

import dataclasses

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import tinyflow
from tinyflow.config_schema import device_schema
from tinyflow.device import CORES, Device
from tinyflow.errors import ConfigError
from tinyflow.plugins import build_device

GOOD = {"name": "t", "sram_kb": 320, "flash_kb": 1024, "core": "cortex_m7", "clock_mhz": 216}


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"sram_kb": -5}, ["device.sram_kb", "-5", "positive"]),
        ({"clock_mhz": 0}, ["device.clock_mhz", "MHz"]),
        ({"flash_kb": "big"}, ["device.flash_kb", "'big'"]),
        ({"power_mw": -1.0}, ["device.power_mw", "≥ 0"]),
        ({"flash_reserve_kb": 1024}, ["device.flash_reserve_kb", "leaves no flash", "Lower"]),
        ({"sram_reserve_kb": 400}, ["device.sram_reserve_kb", "leaves no sram"]),
        ({"core": "pentium"}, ["device.core", "'pentium'", "cortex_m7"]),
        ({"sram_kb": "???"}, ["device.sram_kb", "not set", "device.sram_kb=256"]),
        ({"sram_kbb": 3}, ["device.sram_kbb", "not a device field", "sram_kb"]),
        ({"sram_kb": float("nan")}, ["device.sram_kb", "nan", "finite"]),
        ({"sram_kb": float("inf")}, ["device.sram_kb", "inf", "finite"]),
        ({"flash_kb": 10**400}, ["device.flash_kb", "finite"]),
        ({"clock_mhz": float("-inf")}, ["device.clock_mhz", "finite"]),
        ({"sram_reserve_kb": float("nan")}, ["device.sram_reserve_kb", "finite", "≥ 0"]),
        ({"power_mw": float("inf")}, ["device.power_mw", "finite"]),
        ({"sram_kb": 8, "sram_reserve_kb": 11}, ["device.sram_reserve_kb (11)", "(8 kB)", "below 8", "more sram"]),
    ],
)
def test_from_config_names_the_field_and_the_fix(change: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        Device.from_config({**GOOD, **change})
    msg = str(info.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_composed_nan_and_infinity_are_refused() -> None:
    """Hydra parses `nan` and `inf` on the command line as floats; they passed every range check."""
    for value in ("nan", "inf"):
        with pytest.raises(ConfigError, match="finite"):
            build_device(_compose(f"device.sram_kb={value}"))


def test_construction_validates_too() -> None:
    with pytest.raises(ConfigError, match=r"device\.sram_kb"):
        Device("t", sram_kb=-1, flash_kb=1, core="cortex_m7", clock_mhz=1)
    with pytest.raises(ConfigError, match=r"device\.core"):
        dataclasses.replace(Device(**GOOD), core="z80")


def test_flash_budget_is_flash_minus_reserve() -> None:
    d = Device.from_config({**GOOD, "flash_reserve_kb": 37, "sram_reserve_kb": 20})
    assert (
        d.flash_total_bytes == 1024 * 1024
        and not hasattr(d, "flash_bytes")
        and d.flash_budget_bytes == (1024 - 37) * 1024
    )
    assert d.sram_budget_bytes == 300 * 1024 and d.core_name == "Cortex-M7"


def test_schema_is_generated_from_the_device_fields() -> None:
    schema = device_schema()
    assert [f.name for f in dataclasses.fields(schema)] == [f.name for f in dataclasses.fields(Device)]
    assert {m.name for m in dataclasses.fields(schema)[3].type} == set(CORES)


def test_composed_devices_coerce_numbers_and_refuse_unknown_cores() -> None:
    cfg = _compose("device=stm32h7")
    assert OmegaConf.to_container(cfg.device)["sram_kb"] == 512.0  # float, as logged params show it
    device = build_device(cfg)
    assert device.name == "stm32h743" and device.core == "cortex_m7" and isinstance(device.core, str)
    with pytest.raises(Exception) as info:  # Hydra's override error; the enum's message is its cause
        _compose("device.core=pentium")
    assert "cortex_m7" in f"{info.value} {info.value.__cause__}"
    with pytest.raises(ConfigError, match=r"device\.sram_kb is not set"):
        build_device(_compose("device=custom", "device.flash_kb=1024"))
