"""Hydra search-path plugin: config files of third-party tinyflow plugins join Hydra's search path.

A distribution that declares an entry point in the group `tinyflow.plugins` (value: an importable module)
and ships YAML files under `<module>/conf/<group>/<option>.yaml` gets them onto the search path, so
`scheduler=theirs` works without editing tinyflow.
"""

from __future__ import annotations

import importlib.util
import logging
from importlib.metadata import entry_points
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tinyflow.plugins"


def plugin_conf_dirs() -> list[tuple[str, Path]]:
    """(entry point name, conf dir) of every installed tinyflow plugin distribution that ships configs."""
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        module = ep.value.split(":")[0]
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            log.warning("tinyflow plugin %r: module %r cannot be found", ep.name, module)
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            conf = Path(location) / "conf"
            if conf.is_dir():
                found.append((ep.name, conf))
    return found


class TinyflowSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for name, conf in plugin_conf_dirs():
            search_path.append(provider=f"tinyflow-plugin-{name}", path=f"file://{conf.as_posix()}")
