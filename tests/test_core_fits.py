"""Per-core MicroNets fits of tinyflow's firmware: the fit, its storage, and device files that name them."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import tinyflow
from tinyflow.cost.core_fits import CoreFit, _load, core_fit, core_fits, store_fit
from tinyflow.cost.fit import fit_core, main
from tinyflow.cost.latency import latency_intercept, latency_slope, latency_source
from tinyflow.device import Device
from tinyflow.errors import ConfigError
from tinyflow.firmware.linker import TARGETS
from tinyflow.plugins import build_device


def _device_cores() -> list[str]:
    """The cores of the named parts in conf/device whose firmware runs on an emulated board here."""
    import yaml

    cores = {yaml.safe_load(p.read_text()).get("core") for p in (tinyflow.CONF_DIR / "device").glob("*.yaml")}
    return sorted(c for c in cores if c in TARGETS and TARGETS[c].machine is not None)


def _rows(path: Path, a: float, n: int = 30, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    macs = rng.integers(2_000_000, 5_000_000, size=n)
    insns = a * macs * (1 + rng.normal(0, 0.01, size=n))
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "macs", "instructions", "latency_ms", "core"])
        for i, (m, k) in enumerate(zip(macs, insns)):
            w.writerow([f"s{i}", int(m), int(k), k / 216e3, "cortex_m4"])
    return path


def test_fit_core_recovers_the_slope_and_ranks(tmp_path: Path) -> None:
    fit = fit_core(_rows(tmp_path / "r.csv", 2.8), "cortex_m4", 1.0, "mps2-an386", "test")
    assert fit.instructions_per_mac == pytest.approx(2.8, rel=0.03)
    assert fit.n == 30 and fit.r2 > 0.9 and fit.spearman > 0.9 and fit.intercept_instructions >= 0


def test_fit_core_keeps_a_positive_intercept(tmp_path: Path) -> None:
    """A fixed cost per inference (e.g. soft-float input quantization on an M0+) is an intercept, not slope."""
    path = tmp_path / "r.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "macs", "instructions"])
        for i, m in enumerate(range(2_000_000, 5_000_000, 100_000)):
            w.writerow([f"s{i}", m, int(4.4 * m + 2_600_000 + (i % 3) * 1000)])
    fit = fit_core(path, "cortex_m0plus", 1.0, "mps2-an385", "test")
    assert fit.instructions_per_mac == pytest.approx(4.4, rel=1e-3)
    assert fit.intercept_instructions == pytest.approx(2_601_000, rel=1e-3)


def test_store_fit_replaces_one_core_atomically(tmp_path: Path) -> None:
    path = tmp_path / "fits.yaml"
    a = CoreFit("cortex_m4", 2.8, 0.0, 0.99, 0.98, 30, 1.0, "mps2-an386", "x")
    store_fit(a, path)
    store_fit(replace(a, core="cortex_m7", instructions_per_mac=2.7), path)
    store_fit(replace(a, instructions_per_mac=2.5), path)
    loaded = _load(str(path))
    assert loaded["cortex_m4"].instructions_per_mac == 2.5 and loaded["cortex_m7"].instructions_per_mac == 2.7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fits.yaml"]  # no temp file left


def test_a_device_naming_a_fit_gets_its_latency_and_an_explicit_slope_wins() -> None:
    fit = next(iter(core_fits().values()))
    dev = Device("d", 256, 1024, fit.core, 100.0, latency_fit=fit.core)
    assert latency_slope(dev) == pytest.approx(500 * fit.instructions_per_mac * fit.assumed_cpi / 100.0)
    assert latency_intercept(dev) == pytest.approx(fit.intercept_ms(100.0))
    assert fit.core in latency_source(dev) and "assumed CPI" in latency_source(dev)
    own = replace(dev, latency_ms_per_mop=1.5)
    assert latency_slope(own) == 1.5


def test_an_unknown_fit_is_one_config_error() -> None:
    dev = Device("d", 256, 1024, "cortex_m4", 100.0, latency_fit="cortex_m99")
    with pytest.raises(ConfigError, match=r"device\.latency_fit = 'cortex_m99'.*bench_firmware"):
        latency_slope(dev)


def test_fit_cli_names_a_csv_without_instructions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("model,macs,latency_ms\na,1,2\n")
    assert main([str(bad), "--core", "cortex_m4"]) == 2
    assert "needs columns macs and instructions" in capsys.readouterr().err


@pytest.mark.parametrize("core", _device_cores())
def test_every_device_core_run_here_has_a_measured_fit_that_ranks(core: str) -> None:
    """Issue 23: Spearman >= 0.95 between estimated and measured instructions over >= 30 subnets, per core."""
    fit = core_fit(core)
    assert fit.n >= 30 and fit.spearman >= 0.95, fit
    assert fit.machine == TARGETS[core].machine


def test_device_files_name_their_cores_fit() -> None:
    """Every named part whose core has a measured fit uses its own core's fit (not another core's)."""
    fits = core_fits()
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        for path in sorted((tinyflow.CONF_DIR / "device").glob("*.yaml")):
            if path.stem == "custom":
                continue
            dev = build_device(compose("config", overrides=["tracking=none", f"device={path.stem}"]))
            if dev.core in fits:
                assert dev.latency_fit == dev.core, f"{path.name}: latency_fit should be {dev.core}"
                assert dev.latency_ms_per_mop == 0, f"{path.name}: a pasted slope would shadow the core fit"
            elif dev.latency_fit:
                assert dev.latency_fit in fits, path.name
