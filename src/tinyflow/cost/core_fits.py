"""Per-core MicroNets fits of tinyflow's own firmware: instructions per inference = a · MACs, measured.

`benchmarks/bench_firmware.py --core <core>` builds ≥ 30 subnets of the default space for one core, runs them on
that core's qemu board with `-icount` and writes their MACs and instructions; `python -m tinyflow.cost.fit
rows.csv --core <core> --write` fits the line and stores it in `core_fits.yaml` beside this module. A device file
names the fit it uses (`latency_fit: cortex_m4`); its latency is instructions × CPI / clock, with the CPI the fit
file states (qemu counts instructions, not cycles, so the CPI is an assumption, said where it is used).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from tinyflow.atomic import atomic_write_text
from tinyflow.errors import ConfigError

FITS_PATH = Path(__file__).with_name("core_fits.yaml")


@dataclass(frozen=True)
class CoreFit:
    """One core's measured line: instructions = instructions_per_mac · MACs (+ intercept_instructions ≥ 0)."""

    core: str
    instructions_per_mac: float
    intercept_instructions: float
    r2: float
    spearman: float  # rank correlation between the line's estimate and the measured instructions
    n: int  # measured subnets
    assumed_cpi: float  # cycles per instruction, an assumption (qemu counts instructions)
    machine: str  # the qemu board that ran the builds
    command: str  # what measured it

    def latency_ms_per_mop(self, clock_mhz: float) -> float:
        """ms per 1e6 ops (ops = 2 · MACs) at `clock_mhz`: 5e5 MACs · a instructions · CPI / clock."""
        return 500.0 * self.instructions_per_mac * self.assumed_cpi / clock_mhz

    def intercept_ms(self, clock_mhz: float) -> float:
        return self.intercept_instructions * self.assumed_cpi / (clock_mhz * 1e3)

    def describe(self, clock_mhz: float) -> str:
        return (
            f"the {self.core} fit of tinyflow's firmware ({self.instructions_per_mac:.3f} instructions per MAC "
            f"+ {self.intercept_instructions / 1e6:.2f} M over "
            f"{self.n} subnets on qemu {self.machine}, r2 {self.r2:.3f}, Spearman {self.spearman:.3f}) x assumed CPI "
            f"{self.assumed_cpi:g} at {clock_mhz:g} MHz"
        )


@lru_cache(maxsize=1)
def _load(path: str) -> dict[str, CoreFit]:
    p = Path(path)
    raw = yaml.safe_load(p.read_text()) if p.is_file() else None
    return {core: CoreFit(core=core, **node) for core, node in (raw or {}).items()}


def core_fits() -> dict[str, CoreFit]:
    """Every stored per-core fit, by core name."""
    return _load(str(FITS_PATH))


def core_fit(core: str) -> CoreFit:
    """The stored fit for `core`; a ConfigError naming the cores that have one and how to measure another."""
    fits = core_fits()
    if core not in fits:
        raise ConfigError(
            f"device.latency_fit = '{core}': no measured fit for that core (fits: {', '.join(sorted(fits)) or 'none'})."
            f" Measure one with `benchmarks/bench_firmware.py --core {core}` then `python -m tinyflow.cost.fit "
            f"<csv> --core {core} --write`, or leave latency_fit empty to derive latency from the clock."
        )
    return fits[core]


def store_fit(fit: CoreFit, path: Path = FITS_PATH) -> None:
    """Add or replace `fit.core`'s entry in the fit file (written whole to a temp file, then renamed)."""
    raw = yaml.safe_load(path.read_text()) if path.is_file() else {}
    node = asdict(fit)
    node.pop("core")
    raw = {**(raw or {}), fit.core: node}
    header = "# per-core fits of tinyflow's firmware (tinyflow.cost.core_fits); written by tinyflow.cost.fit --write\n"
    atomic_write_text(path, header + yaml.safe_dump(dict(sorted(raw.items())), sort_keys=True, width=200))
    _load.cache_clear()
