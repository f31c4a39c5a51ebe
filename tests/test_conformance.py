"""Every option of every plugin group passes its kind's behaviour suite (`tinyflow.testing`; the backend, which needs
an exported model, is covered by test_backend); a scheduler written outside tinyflow passes the scheduler suite; a
tracker written only to the Protocol receives the pipeline's calls."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tinyflow.testing import SUITES, check_scheduler, group_options, run_suite

REPO = Path(__file__).resolve().parents[1]
FAST_GROUPS = ("scheduler", "strategy", "cost_model", "search_space")
CASES = [(g, o) for g in FAST_GROUPS for o in group_options(g)]


def test_every_group_with_a_suite_has_options() -> None:
    for group in SUITES:
        assert group_options(group), f"conf/{group}/ has no option"


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_passes_its_suite(group: str, option: str) -> None:
    run_suite(group, option)


@pytest.mark.parametrize("option", group_options("device"))
def test_device_option_passes_its_suite(option: str) -> None:
    run_suite("device", option)


@pytest.mark.slow
@pytest.mark.parametrize("option", group_options("trainer"))
def test_trainer_option_passes_its_suite(option: str, tmp_path: Path) -> None:
    overrides = ("data=digits", "cache.train=false", f"cache.dir={tmp_path / 'cache'}")
    run_suite("trainer", option, *overrides, workdir=str(tmp_path / "train"))


# ---------------------------------------------------------------- data: debug-size data for every option
def _fake_cifar(root: Path) -> list[str]:
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {b"data": rng.integers(0, 256, (40, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(40)]}
        (root / name).write_bytes(pickle.dumps(entry))
    return [f"data.root={root}"]


def _image_folder(root: Path) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return [f"data.root={root}", "data.image_size=20"]


DATA_FILES = {"cifar10": _fake_cifar, "imagefolder": _image_folder}


@pytest.mark.parametrize("option", group_options("data"))
def test_data_option_passes_its_suite(option: str, tmp_path: Path) -> None:
    overrides = [f"cache.dir={tmp_path / 'cache'}"]
    if option in DATA_FILES:
        (tmp_path / "data").mkdir()
        overrides += DATA_FILES[option](tmp_path / "data")
    run_suite("data", option, *overrides)


# ---------------------------------------------------------------- trackers
@pytest.mark.parametrize("option", group_options("tracking"))
def test_tracking_option_passes_its_suite(option: str, tmp_path: Path) -> None:
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    overrides = [f"tracking.uri={uri}"] if option == "mlflow" else []
    run_suite("tracking", option, *overrides)
    if option == "mlflow":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name("tinyflow").experiment_id])
        parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(parent) == 1 and parent[0].data.metrics["score"] == 0.5
        assert sorted(r.data.tags["stage"] for r in children) == ["one", "two"]
        assert all(r.info.status == "FINISHED" and r.data.metrics["x"] == 2.0 for r in children)


@pytest.mark.slow
def test_protocol_only_tracker_receives_the_pipeline_calls(tmp_path: Path) -> None:
    """A tracker that inherits nothing, activated by the pipeline, gets the job, the stage and what it logs."""
    out = tmp_path / "calls.json"
    cmd = [
        sys.executable,
        "-m",
        "tinyflow",
        "debug=fast",
        "stages=[space]",
        "tracking=recording",
        f"tracking.path={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"cache.dir={tmp_path / 'cache'}",
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    calls = json.loads(out.read_text())
    methods = [c[0] for c in calls]
    assert methods[0] == "job" and methods[-1] == "job_end"
    assert ["stage", ["space"]] in calls and ["stage_end", ["space"]] in calls
    inside = methods[methods.index("stage") : methods.index("stage_end")]
    assert {"log_params", "log_metrics", "log_artifact", "log_figure"} <= set(inside)
    metrics = {k for c in calls if c[0] == "log_metrics" for k in c[1][0]}
    assert "chosen_width_mult" in metrics


# ---------------------------------------------------------------- a scheduler from outside tinyflow
SCHEDULER_SOURCE = '''
"""A scheduler written outside tinyflow, to the Protocol only (no tinyflow base class)."""

from tinyflow.memory.layer_plan import layer_plan


class TheirScheduler:
    name = "theirs"

    def __init__(self, shrink_arena: bool = False, knob: int = 1):
        self.shrink_arena, self.knob = shrink_arena, knob

    def network(self, net):
        return net

    def plan(self, graph, memory):
        plan = layer_plan(graph, memory)
        if self.shrink_arena:  # a broken planner: the arena cannot hold the peak
            plan.arena_bytes = plan.peak_live_bytes - 1
        return plan

    def search_options(self):
        return {"knob": [1, 2]}

    def arch_costs(self, arch, memory):
        return None

    def for_budget(self, budget):  # no policy: plans the same whatever the budget
        return self
'''


def _write_plugin(root: Path) -> Path:
    pkg = root / "tfext_conformance"
    (pkg / "conf" / "scheduler").mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(SCHEDULER_SOURCE))
    (pkg / "conf" / "scheduler" / "theirs.yaml").write_text("_target_: tfext_conformance.TheirScheduler\nknob: 1\n")
    (pkg / "conf" / "scheduler" / "theirs_broken.yaml").write_text(
        "_target_: tfext_conformance.TheirScheduler\nshrink_arena: true\n"
    )
    # installed as a user installs a plugin: a distribution declaring the `tinyflow.plugins` entry point
    dist = root / "tfext_conformance-0.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tfext-conformance\nVersion: 0.0.0\n")
    (dist / "entry_points.txt").write_text("[tinyflow.plugins]\ntfext = tfext_conformance\n")
    return pkg / "conf"


def test_out_of_tree_scheduler_passes_the_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _write_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert {"theirs", "theirs_broken"} <= set(group_options("scheduler", [conf]))
    plan = run_suite("scheduler", "theirs", conf=[conf])
    assert plan.arena_bytes >= plan.peak_live_bytes
    with pytest.raises(AssertionError, match="arena"):
        run_suite("scheduler", "theirs_broken", conf=[conf])
    from tfext_conformance import TheirScheduler

    check_scheduler(TheirScheduler(knob=2))  # the suite also runs on an object built by hand


# ---------------------------------------------------------------- backends: their own options
@pytest.mark.parametrize("option", group_options("backend"))
def test_backend_option_declares_its_own_options(option: str) -> None:
    """A backend takes no `**options` (an option it does not know is an error, not swallowed); the ranges it
    declares are of its own options; its config composes under debug=fast and builds."""
    from hydra.utils import get_class

    from tinyflow.config_schema import plugin_ranges, plugin_schema, validate_config
    from tinyflow.testing import compose

    cfg = compose("backend", option)
    schema, open_ended = plugin_schema(str(cfg.backend._target_))
    assert not open_ended, f"backend={option} takes **options"
    assert set(plugin_ranges(get_class(str(cfg.backend._target_)))) <= set(schema)
    validate_config(cfg)
    from tinyflow.plugins import build_plugin

    assert build_plugin(cfg, "backend").name == option
