"""Must show (issue 13): `scheduler=patch` on the defaults succeeds with every device in conf/device/ — the
`space` and `search` stages (debug=fast) — and `tinyflow.analyze scheduler=patch scheduler.n_patches=auto` keeps
to `max_extra_macs` and returns the layer plan when it fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tinyflow.analyze.core import analyze
from tinyflow.arch import mobilenetv2
from tinyflow.arch.genome import Arch
from tinyflow.context import RunContext
from tinyflow.cost import arch_cost
from tinyflow.ir import from_arch
from tinyflow.memory import layer_plan
from tinyflow.plugins import build_device, build_memory, build_plugin
from tinyflow.tracking import NullTracker

REPO = Path(__file__).resolve().parent.parent
# every device option; `custom` at 16 KB, where the layer plan of most default subnets does not fit
DEVICES = [p.stem for p in sorted((REPO / "conf" / "device").glob("*.yaml")) if p.stem != "custom"] + ["custom"]
CUSTOM = ["device.sram_kb=16", "device.flash_kb=256"]
CHEAP = (  # the cheapest settings of the default stages: a few batches, a handful of subnets
    "trainer.phases=[{name: full, epochs: 1, lr: 0.05, random_subnets: 0, kernel: [7], depth: [4], expand: [6]},"
    "{name: expand, epochs: 1, lr: 0.02, random_subnets: 1, kernel: null, depth: null, expand: null}]"
)


def compose_cfg(device: str, tmp: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return compose(
            "config",
            overrides=[
                f"device={device}",
                *(CUSTOM if device == "custom" else []),
                "scheduler=patch",
                "debug=fast",
                "tracking=none",
                f"cache.dir={tmp / 'cache'}",
                "space.samples_per_cell=20",
                "trainer.limit_train_batches=2",
                "trainer.progress=false",
                "trainer.recalib_batches=1",
                "data.max_eval_samples=64",
                "strategy.objective=supernet",
                "strategy.population=4",
                "strategy.n_evaluations=6",
                CHEAP,
                *overrides,
            ],
        )


@pytest.fixture(scope="module")
def supernet(tmp_path_factory):
    """A supernet of the default space (data, search space) at the default budget's cell, a few batches."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("patch_devices")
    cfg = compose_cfg("samd21", tmp, "search_space.width_mult=0.5", "search_space.resolution=48")
    data = build_plugin(cfg, "data")
    data.setup()
    space = build_plugin(cfg, "search_space").bind(data)
    out = build_plugin(cfg, "trainer").fit(space, data, str(tmp / "supernet"), NullTracker())
    return tmp, out.checkpoint


@pytest.mark.slow
def test_space_and_search_stages_with_patch_on_every_device(supernet):
    from tinyflow.search.costing import fixed_overhead
    from tinyflow.stages import search, space

    tmp, ckpt = supernet
    used = {}
    for device in DEVICES:
        cfg = compose_cfg(device, tmp)
        out = tmp / device
        ctx = space.run(cfg, RunContext(output_dir=str(out)))
        assert ctx.width_mult is not None and ctx.resolution in cfg.space.resolutions
        ctx = search.run(cfg, RunContext(output_dir=str(out), supernet_checkpoint=ckpt))
        summary = json.loads((out / "search" / "search_summary.json").read_text())
        arch = Arch.from_dict(ctx.arch)
        sram = build_device(cfg).sram_budget_bytes
        assert summary["arena_fits"] and summary["plan_arena_bytes"] <= sram
        # the patch policy's share of the budget leaves the firmware's runtime and stack (issue 22)
        layer_fits = arch_cost(arch).peak_live_bytes <= sram - fixed_overhead(build_device(cfg).core)
        assert summary["schedule_used"].startswith("layer" if layer_fits else "patch"), summary
        assert ctx.schedule_options == ({} if layer_fits else summary["schedule"])
        used[device] = summary["schedule_used"]
    assert used["custom"].startswith("patch")  # 16 KB: only patch plans fit
    assert used["stm32h743"] == "layer"  # 512 KB: the layer plan fits, patching would only add MACs


NETWORKS = [(0.35, 96), (0.5, 128), (1.0, 224)]


@pytest.mark.parametrize("device", ["stm32f746", "stm32f412", "nrf52832", "samd21"])
def test_analyze_auto_keeps_to_max_extra_macs_and_prefers_layer(device):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose("analyze", overrides=[f"device={device}", "scheduler=patch", "scheduler.n_patches=auto"])
    scheduler, memory, dev = build_plugin(cfg, "scheduler"), build_memory(cfg), build_device(cfg)
    assert scheduler.max_extra_macs == 0.5  # the stated default
    for width, res in NETWORKS:
        graph = from_arch(mobilenetv2(width, res))
        analysis, plan, _ = analyze(graph, scheduler, memory, dev, build_plugin(cfg, "cost_model"), strict=True)
        layer = layer_plan(graph, memory)
        assert plan.macs - layer.macs <= 0.5 * layer.macs
        if layer.arena_bytes <= dev.sram_budget_bytes:
            assert analysis["schedule_used"] == "layer" and plan.macs == layer.macs
        else:
            assert analysis["schedule_used"] != "layer" or not analysis["fits_sram"]
        assert analysis["schedule_reason"]


@pytest.mark.slow
def test_analyze_cli_says_which_schedule_and_why(tmp_path):
    import subprocess
    import sys

    from conftest import cli_env

    def run(*args: str) -> dict:
        cmd = [sys.executable, "-m", "tinyflow.analyze", *args, "output=json", "tracking=none"]
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        res = subprocess.run([*cmd, f"hydra.run.dir={out}"], cwd=REPO, env=cli_env(), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    roomy = run(
        "device=stm32h743",
        "scheduler=patch",
        "scheduler.n_patches=auto",
        "network.width_mult=0.35",
        "network.resolution=144",
    )
    assert roomy["schedule_used"] == "layer" and roomy["schedule_reason"].startswith("the layer plan fits")
    tight = run("device=stm32f746", "scheduler=patch", "scheduler.n_patches=auto")
    assert tight["schedule_used"].startswith("patch") and tight["fits_sram"]
    assert tight["extra_macs"] <= 0.5 * tight["layer_macs"]
