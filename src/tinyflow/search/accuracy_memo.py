"""A persistent memo of subnet accuracies measured on one supernet, shared by the jobs of a sweep.

Measuring a subnet on the supernet (BatchNorm recalibration + a pass over the validation split) is the search's main
cost: the accuracy predictor alone measures `predictor.n_samples` subnets. The measurement is a pure function of the
supernet checkpoint's bytes, the evaluation settings and the arch, so jobs that search the same supernet for
different devices look the arch up before measuring it. One sqlite file per `evaluation_key` (see
`tinyflow.training.cache`); sqlite makes concurrent jobs safe.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from tinyflow.arch.genome import Arch
from tinyflow.training.cache import cache_dir, evaluation_key, writable_dir

log = logging.getLogger(__name__)

_SCHEMA = "CREATE TABLE IF NOT EXISTS accuracy (arch TEXT, split TEXT, value REAL, PRIMARY KEY (arch, split))"


class AccuracyMemo:
    """arch -> accuracy for one supernet and evaluation setting; counts its hits and misses."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.commit()
        self.hits = 0
        self.misses = 0

    def get(self, arch: Arch, split: str) -> float | None:
        row = self._db.execute(
            "SELECT value FROM accuracy WHERE arch = ? AND split = ?", (arch.key(), split)
        ).fetchone()
        return None if row is None else float(row[0])

    def put(self, arch: Arch, split: str, value: float) -> None:
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO accuracy VALUES (?, ?, ?)", (arch.key(), split, float(value)))

    def items(self, split: str) -> list[tuple[str, float]]:
        """Every (arch key, accuracy) measured on `split` so far, by any job sharing the memo (key order)."""
        rows = self._db.execute("SELECT arch, value FROM accuracy WHERE split = ? ORDER BY arch", (split,))
        return [(str(key), float(value)) for key, value in rows.fetchall()]

    def wrap(self, measure: Callable[[Arch], float], split: str) -> Callable[[Arch], float]:
        """`measure` that looks each arch up first and records what it measures."""

        def memoized(arch: Arch) -> float:
            known = self.get(arch, split)
            if known is not None:
                self.hits += 1
                return known
            self.misses += 1
            value = measure(arch)
            self.put(arch, split, value)
            return value

        return memoized

    def wrap_many(self, measure_many: Callable[..., list[float]], split: str) -> Callable[..., list[float]]:
        """`measure_many(archs, progress)` that looks every arch up first, measures the rest in one call and records
        them; `progress(n)` is told of the looked-up ones too."""

        def memoized(archs: list[Arch], progress: Callable[[int], None] | None = None) -> list[float]:
            known = {a.key(): self.get(a, split) for a in archs}
            missing = [a for a in archs if known[a.key()] is None]
            self.hits += len(archs) - len(missing)
            self.misses += len(missing)
            if progress is not None and len(archs) > len(missing):
                progress(len(archs) - len(missing))
            for arch, value in zip(missing, measure_many(missing, progress)):
                self.put(arch, split, value)
                known[arch.key()] = value
            return [float(known[a.key()]) for a in archs]  # type: ignore[arg-type]

        return memoized

    def close(self) -> None:
        self._db.close()


def accuracy_memo(cfg: DictConfig, checkpoint: str | Path) -> AccuracyMemo | None:
    """The memo of `checkpoint` under `<cache.dir>/search/` when `cache.search` is on, else None."""
    root = cache_dir(cfg, "search")
    if root is None or not writable_dir(root, "search cache"):  # read-only or full: off, one log line
        return None
    path = root / f"{evaluation_key(cfg, checkpoint)}.sqlite"
    try:
        return AccuracyMemo(path)
    except (sqlite3.DatabaseError, OSError) as exc:  # a damaged memo costs time, not the run
        log.warning(
            "search: accuracy memo %s unusable (%s); measuring without it (delete the file to rebuild)", path, exc
        )
        return None
