"""A third-party plugin distribution: its configs join Hydra's search path through the entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import tinyflow

DIST = "tinyflow-ext-demo"


def _write_distribution(root: Path) -> None:
    pkg = root / "tfext_demo"
    (pkg / "conf" / "scheduler").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "{DIST}"
            version = "0.0.1"
            [project.entry-points."tinyflow.plugins"]
            demo = "tfext_demo"
            [tool.setuptools]
            packages = ["tfext_demo"]
            [tool.setuptools.package-data]
            tfext_demo = ["conf/*/*.yaml"]
            """
        )
    )
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            '''
            from tinyflow.contracts import SchedulerBase


            class TheirScheduler(SchedulerBase):
                """A scheduler from outside tinyflow (the base class gives network, search_options, arch_costs)."""

                def __init__(self, name: str = "theirs", knob: int = 0):
                    self.name = name
                    self.knob = knob

                def plan(self, graph, memory):
                    raise NotImplementedError("only selection is tested")
            '''
        )
    )
    (pkg / "conf" / "scheduler" / "theirs.yaml").write_text(
        "_target_: tfext_demo.TheirScheduler\nname: theirs\nknob: 7\n"
    )


def _scheduler_in_defaults() -> bool:
    defaults = yaml.safe_load((tinyflow.CONF_DIR / "config.yaml").read_text())["defaults"]
    return any(isinstance(e, dict) and "scheduler" in e for e in defaults)


@pytest.mark.slow
def test_out_of_tree_scheduler_is_selectable(tmp_path: Path, run_cli) -> None:
    src = tmp_path / "dist"
    _write_distribution(src)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", str(src)], check=True, timeout=300)
    select = "scheduler=theirs" if _scheduler_in_defaults() else "+scheduler=theirs"
    try:
        select = "scheduler=theirs" if _scheduler_in_defaults() else "+scheduler=theirs"
        res = run_cli(select, "scheduler.knob=9", "stages=[stages_for_tests:show_scheduler]")
        assert res.returncode == 0, res.stderr
        assert "SCHEDULER=tfext_demo.TheirScheduler name=theirs" in res.stdout
        bad = run_cli(
            "scheduler=nosuch" if _scheduler_in_defaults() else "+scheduler=nosuch", "stages=[stages_for_tests:ok]"
        )
        assert bad.returncode != 0 and "theirs" in bad.stderr  # the plugin's option is listed among the valid ones
    finally:
        subprocess.run([*pip, "uninstall", "-y", DIST], check=True, timeout=300)
    gone = run_cli(select, "stages=[stages_for_tests:ok]")
    assert gone.returncode != 0 and "Could not find 'scheduler/theirs'" in gone.stderr
