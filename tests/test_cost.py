"""Cost models (analytic, micronets), flash per docs/design.md §6, latency coefficients and `tinyflow.cost.fit`."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import tinyflow
from tinyflow.arch import mobilenetv2
from tinyflow.contracts import CostModel, Device, MemoryConfig, Scheduler
from tinyflow.cost import arch_cost, latency_slope, model_flash_bytes
from tinyflow.cost.core_fits import core_fit
from tinyflow.cost.fit import fit_line, main, read_rows
from tinyflow.cost.latency import latency_source
from tinyflow.errors import ConfigError, DataError
from tinyflow.ir import Graph, from_arch
from tinyflow.plugins import build_device, build_plugin

DEVICE = Device(name="t", sram_kb=320, flash_kb=1024, core="cortex_m7", clock_mhz=200, macs_per_cycle=2.0)


def _cfg(*overrides: str):  # type: ignore[no-untyped-def]
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["tracking=none", *overrides])


def test_flash_of_a_hand_graph() -> None:
    g = Graph("h")
    g.add("x", "input", (), {"shape": (1, 3, 8, 8)})
    g.add("c", "conv2d", ("x",), {"out_channels": 4, "kernel": (3, 3), "padding": (1, 1, 1, 1)})
    g.add("d", "conv2d", ("c",), {"out_channels": 4, "kernel": (3, 3), "groups": 4, "padding": (1, 1, 1, 1)})
    g.add("p", "global_avgpool", ("d",))
    g.add("f", "flatten", ("p",))
    g.add("l", "linear", ("f",), {"out_features": 2})
    # int8 weights + (4 B bias + 4 B scale) per output channel
    assert model_flash_bytes(g) == (4 * 27 + 4 * 8) + (4 * 9 + 4 * 8) + (4 * 2 + 2 * 8)
    assert g.macs() == 64 * 4 * 27 + 64 * 4 * 9 + 8


def test_analytic_and_micronets_plugins() -> None:
    # the core fit switched off: the slope is derived from the clock
    cfg = _cfg("cost_model=micronets", "device=nrf52840", "device.flash_reserve_kb=37", "device.latency_fit=''")
    model = build_plugin(cfg, "cost_model")
    assert isinstance(model, CostModel)
    device = build_device(cfg)
    g = from_arch(mobilenetv2(0.35, 144))
    report = model.estimate(g, device)
    assert report.macs == g.macs() and report.params == g.params()
    assert report.flash_bytes == model_flash_bytes(g)  # the model alone; the reserve is off the budget
    # derived slope: 1e6 ops = 5e5 MACs at 2 MACs/cycle and 64 MHz
    assert report.latency_ms == pytest.approx(2 * g.macs() / 1e6 * 500 / (2.0 * 64))
    assert report.energy_mj is None  # no power figure for this board
    assert len(report.per_layer) == len(g) - 1
    assert sum(r["latency_ms"] for r in report.per_layer) == pytest.approx(report.latency_ms)
    fitted = model.estimate(g, build_device(_cfg("cost_model=micronets", "device=nrf52840")))  # the M4 fit
    per_mac = core_fit("cortex_m4").instructions_per_mac
    assert fitted.latency_ms == pytest.approx(g.macs() * per_mac / (64 * 1e3))  # CPI 1 at 64 MHz
    analytic = build_plugin(_cfg("cost_model=analytic"), "cost_model").estimate(g, device)
    assert analytic.latency_ms is None and analytic.flash_bytes == report.flash_bytes


def test_measured_coefficients_win_and_energy() -> None:
    dev = replace(DEVICE, latency_ms_per_mop=0.9, latency_intercept_ms=2.0, power_mw=100.0)
    assert latency_slope(dev) == 0.9
    from tinyflow.cost import energy_mj, latency_ms

    assert latency_ms(5_000_000, dev) == pytest.approx(2.0 + 0.9 * 10)
    assert energy_mj(5_000_000, dev) == pytest.approx(100.0 * 11.0 / 1e3)
    with pytest.raises(ConfigError, match=r"device\.latency_ms_per_mop"):
        latency_slope(replace(DEVICE, macs_per_cycle=0.0))


def test_every_device_has_sourced_coefficients() -> None:
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        for path in sorted((tinyflow.CONF_DIR / "device").glob("*.yaml")):
            if path.stem == "custom":
                continue
            dev = build_device(compose("config", overrides=["tracking=none", f"device={path.stem}"]))
            assert latency_slope(dev) > 0, path.stem
            assert latency_source(dev), f"{path.stem}: where the latency coefficients come from, in words"
            if not dev.latency_fit:
                assert dev.coefficient_source, f"{path.stem}: a pasted or derived slope names its source"


def test_a_device_with_a_datasheet_power_figure_gets_an_energy_estimate() -> None:
    """stm32h743 (and its alias stm32h7) and samd21 carry their datasheets' run-mode power; energy = power x
    latency. A power figure in a device file must name its source in the comment above it."""
    g = from_arch(mobilenetv2(0.35, 144))
    for option in ("stm32h743", "stm32h7"):
        cfg = _cfg("cost_model=micronets", f"device={option}")
        report = build_plugin(cfg, "cost_model").estimate(g, build_device(cfg))
        assert report.energy_mj == pytest.approx(363.0 * report.latency_ms / 1e3)
    cfg = _cfg("cost_model=micronets", "device=samd21")  # the default device: DS40001882's 11.1 mW
    report = build_plugin(cfg, "cost_model").estimate(g, build_device(cfg))
    assert report.energy_mj == pytest.approx(11.1 * report.latency_ms / 1e3)
    for path in sorted((tinyflow.CONF_DIR / "device").glob("*.yaml")):
        text = path.read_text()
        if "\npower_mw:" in text:
            assert "Table" in text and "typ" in text, f"{path.name}: power_mw without its datasheet table"


def test_layer_scheduler_plugin() -> None:
    sched = build_plugin(_cfg("scheduler=layer"), "scheduler")
    assert isinstance(sched, Scheduler) and sched.name == "layer"
    plan = sched.plan(from_arch(mobilenetv2()), MemoryConfig())
    assert plan.peak_live_bytes == 1_404_928 and plan.arena_bytes == 1_404_928


def test_fit_recovers_a_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    macs = rng.integers(5_000_000, 60_000_000, size=12)
    lat = 3.0 + 0.8 * (2 * macs / 1e6) + rng.normal(0, 0.5, size=12)
    csv = tmp_path / "m.csv"
    csv.write_text(
        "model,macs,latency_ms\n" + "".join(f"m{i},{m},{v:.4f}\n" for i, (m, v) in enumerate(zip(macs, lat)))
    )
    _, mops, y, energy = read_rows(csv)
    fit = fit_line(mops, y)
    assert energy is None
    assert fit.slope == pytest.approx(0.8, abs=0.02) and fit.intercept == pytest.approx(3.0, abs=1.0)
    assert 0.99 < fit.r2 <= 1.0
    out = subprocess.run([sys.executable, "-m", "tinyflow.cost.fit", str(csv)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "r2 = 0.99" in out.stdout and "latency_ms_per_mop:" in out.stdout


def test_fit_bad_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("model,latency\nx,1\n")
    with pytest.raises(DataError, match="needs latency_ms"):
        read_rows(bad)
    assert main([str(bad)]) == 2
    assert "error:" in capsys.readouterr().err
    worse = tmp_path / "worse.csv"
    worse.write_text("model,ops,latency_ms\nx,abc,1\n")
    with pytest.raises(DataError, match="line 2"):
        read_rows(worse)
    with pytest.raises(DataError, match="at least 2"):
        fit_line(np.array([1.0]), np.array([2.0]))


def test_fast_cost_of_mobilenetv2() -> None:
    c = arch_cost(mobilenetv2())
    assert (c.macs, c.peak_live_bytes, c.peak_layer) == (300_774_272, 1_404_928, "blocks.1.expand")
    assert arch_cost(mobilenetv2(), MemoryConfig(inplace_depthwise=False)).peak_live_bytes == 1470 * 1024


def test_cost_models_price_the_plan_that_runs() -> None:
    """With a plan, MACs (and latency) are the plan's: a patch schedule's recomputation costs time; the analysis
    takes them from the cost model only (analytic: no latency)."""
    from tinyflow.analyze.core import analyze
    from tinyflow_plugins.schedulers.patch import PatchScheduler

    cfg = _cfg("cost_model=micronets", "device=stm32f746")
    micronets, analytic = build_plugin(cfg, "cost_model"), build_plugin(_cfg("cost_model=analytic"), "cost_model")
    device = build_device(cfg)
    g = from_arch(mobilenetv2(0.35, 96))
    plan = PatchScheduler(n_patches=3, patch_blocks=4).plan(g, MemoryConfig())
    assert plan.macs > g.macs()
    report = micronets.estimate(g, device, plan)
    assert report.macs == plan.macs and report.flash_bytes == model_flash_bytes(g)
    assert report.latency_ms == pytest.approx(micronets.estimate(g, device).latency_ms * plan.macs / g.macs())
    sched = PatchScheduler(n_patches=3, patch_blocks=4)
    timed, _, _ = analyze(g, sched, MemoryConfig(), device, micronets)
    untimed, _, _ = analyze(g, sched, MemoryConfig(), device, analytic)
    assert timed["latency_ms"] == report.latency_ms and timed["macs"] == untimed["macs"] == plan.macs
    assert untimed["latency_ms"] is None and untimed["energy_mj"] is None
    assert untimed["flash_budget_bytes"] == device.flash_budget_bytes
