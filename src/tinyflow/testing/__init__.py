"""Behaviour suites per plugin kind, for tinyflow's own options and for plugins written outside it.

Each `check_*` takes a built plugin and raises AssertionError naming what it got wrong; `run_suite(group, option)`
composes `conf/<group>/<option>.yaml` as a run does (Hydra, `debug=fast`), builds it through
`tinyflow.plugins.build_plugin` and runs the group's suite. An out-of-tree plugin runs the same checks, e.g. in
its own tests::

    from tinyflow.testing import group_options, run_suite

    @pytest.mark.parametrize("option", group_options("scheduler", ["my_pkg/conf"]))
    def test_scheduler(option):
        run_suite("scheduler", option, conf=["my_pkg/conf"])

(`conf` is only needed while the plugin is not installed; an installed one is found through its entry point.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tinyflow.testing.backend import check_backend, check_backend_result
from tinyflow.testing.compose import build, compose, group_options
from tinyflow.testing.kinds import (
    RecordingTracker,
    check_data_module,
    check_device,
    check_tracker,
    check_trainer,
)
from tinyflow.testing.suites import (
    check_cost_model,
    check_plan,
    check_scheduler,
    check_search_space,
    check_strategy,
    tiny_arch,
    tiny_device,
    tiny_space,
)

#: group -> the suite its plugins must pass
SUITES: dict[str, Callable[[Any], Any]] = {
    "scheduler": check_scheduler,
    "strategy": check_strategy,
    "cost_model": check_cost_model,
    "search_space": check_search_space,
    "data": check_data_module,
    "tracking": check_tracker,
    "device": check_device,
    "trainer": check_trainer,
}


def run_suite(group: str, option: str, *overrides: str, conf: Sequence[str | Path] = (), workdir: str = "") -> Any:
    """Compose and build `group=option` (`overrides` as on the command line) and run the group's suite.

    `device` is validated by `tinyflow.plugins.build_device`; a `trainer` fits on the configured data (debug
    size) in `workdir`.
    """
    if group == "device":
        from tinyflow.plugins import build_device

        return check_device(build_device(compose(group, option, *overrides, conf=conf)))
    if group == "trainer":
        cfg = compose(group, option, *overrides, conf=conf)
        from tinyflow.plugins import build_plugin

        return check_trainer(build_plugin(cfg, "trainer"), build_plugin(cfg, "data"), workdir)
    plugin = build(group, option, *overrides, conf=conf)
    if group == "scheduler":  # the options a joint search varies must build and plan too
        options = {name: next(iter(choices)) for name, choices in plugin.search_options().items()}
        if options:
            check_scheduler(build(group, option, *overrides, conf=conf, **options))
    return SUITES[group](plugin)


__all__ = [
    "SUITES",
    "RecordingTracker",
    "build",
    "check_backend",
    "check_backend_result",
    "check_cost_model",
    "check_data_module",
    "check_device",
    "check_plan",
    "check_scheduler",
    "check_search_space",
    "check_strategy",
    "check_tracker",
    "check_trainer",
    "compose",
    "group_options",
    "run_suite",
    "tiny_arch",
    "tiny_device",
    "tiny_space",
]
