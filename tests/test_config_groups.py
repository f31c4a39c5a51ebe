"""Every option of every config group composes and instantiates (new options are picked up automatically)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import tinyflow
from tinyflow.contracts import PROTOCOLS
from tinyflow.plugins import build_device, build_memory, build_plugin

CONF = tinyflow.CONF_DIR
PLUGIN_GROUPS = sorted(g for g in PROTOCOLS if (CONF / g).is_dir())
# extra overrides an option needs to compose (values the user must give)
REQUIRED = {("device", "custom"): ["device.sram_kb=128", "device.flash_kb=1024"]}


def _in_defaults() -> set[str]:
    """Groups listed in config.yaml's defaults (selected with `group=x`; others need `+group=x`)."""
    import yaml

    defaults = yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]
    names = set()
    for entry in defaults:
        if isinstance(entry, dict):
            names.update(k.removeprefix("optional ").split("@")[0] for k in entry)
    return names


def _select(group: str, option: str) -> str:
    return f"{group}={option}" if group in _in_defaults() else f"+{group}={option}"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


CASES = [(g, o) for g in ["device", *PLUGIN_GROUPS] for o in _options(g)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_instantiates(group: str, option: str) -> None:
    cfg = _compose([_select(group, option), *REQUIRED.get((group, option), [])])
    OmegaConf.resolve(cfg)
    if group == "device":
        device = build_device(cfg)
        assert device.sram_kb > 0 and device.flash_kb > 0 and device.clock_mhz > 0
        assert Path(CONF / "device" / f"{option}.yaml").read_text().lstrip().startswith("#"), "name the datasheet"
    else:
        build_plugin(cfg, group)


@pytest.mark.parametrize("group", ["experiment", "debug"])
def test_recipes_compose(group: str) -> None:
    for option in _options(group):
        cfg = _compose([_select(group, option)])
        assert cfg.stages is not None


def test_default_config_builds_memory_and_device() -> None:
    cfg = _compose([])
    assert build_memory(cfg).inplace_depthwise is True
    assert build_device(cfg).name == "samd21"


def test_stm32h7_alias_selects_h743() -> None:
    assert build_device(_compose(["device=stm32h7"])).name == "stm32h743"
