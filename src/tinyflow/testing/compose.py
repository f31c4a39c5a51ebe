"""Compose a config group option the way a run does (Hydra + `debug=fast`) and build its plugin.

Options are found in `conf/<group>/`, in every installed plugin distribution's `conf/<group>/` (the entry points
of `tinyflow.plugins`, README "Plugins"), and in any extra `conf` folder passed as `conf_dirs` (a plugin under
development, not installed yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

import tinyflow

#: values an option needs before it composes (the user must give them)
REQUIRED: dict[tuple[str, str], tuple[str, ...]] = {
    ("device", "custom"): ("device.sram_kb=128", "device.flash_kb=1024")
}


def conf_dirs(extra: Sequence[str | Path] = ()) -> list[Path]:
    """tinyflow's `conf/`, installed plugins' `conf/` folders, then `extra`."""
    from hydra_plugins.tinyflow_searchpath import plugin_conf_dirs

    return [tinyflow.CONF_DIR, *(conf for _, conf in plugin_conf_dirs()), *(Path(p) for p in extra)]


def group_options(group: str, extra: Sequence[str | Path] = ()) -> list[str]:
    """Every option of `group`, sorted."""
    return sorted({p.stem for d in conf_dirs(extra) for p in (d / group).glob("*.yaml")})


def _in_defaults(group: str) -> bool:
    import yaml

    defaults = yaml.safe_load((tinyflow.CONF_DIR / "config.yaml").read_text())["defaults"]
    keys = {k.removeprefix("optional ").split("@")[0] for e in defaults if isinstance(e, dict) for k in e}
    return group in keys


def compose(
    group: str, option: str, *overrides: str, conf: Sequence[str | Path] = (), debug: bool = True
) -> DictConfig:
    """The run config with `group=option` (and `debug=fast` unless `debug=False`), resolved."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    select = f"{group}={option}" if _in_defaults(group) else f"+{group}={option}"
    args = [select, *REQUIRED.get((group, option), ()), *(["debug=fast"] if debug else []), *overrides]
    if conf:
        paths = ",".join(f"file://{Path(p).resolve().as_posix()}" for p in conf)
        args.append(f"hydra.searchpath=[{paths}]")
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=args)
    OmegaConf.resolve(cfg)
    return cfg


def build(group: str, option: str, *overrides: str, conf: Sequence[str | Path] = (), **kwargs: Any) -> Any:
    """The plugin of `group=option`, built and Protocol-checked by `tinyflow.plugins.build_plugin`."""
    from tinyflow.plugins import build_plugin

    return build_plugin(compose(group, option, *overrides, conf=conf), group, **kwargs)
