"""A content-addressed cache of trained models, so that runs which would train the same thing train it once.

Once-for-All's premise is "train once, deploy many": a sweep over devices (`-m device.sram_kb=... device.flash_kb=...`)
should not retrain the supernet for every device. The `train` stage's result depends only on what is hashed into
the key — the data, search-space and trainer options, the seed, the (width, resolution) the `space` stage chose,
the torch version and the source code of tinyflow and its plugins — so jobs with equal keys share one training.
Jobs of a parallel sweep that want the same key wait on a file lock while the first one trains.

An entry is a directory `<cache.dir>/train/<key>/` holding the trainer's `TrainResult` (`result.json`, with the run
that trained it and the checkpoint's SHA-256) and its checkpoint; it is written under a temporary name and renamed
into place, so a crash never leaves half an entry, and a lookup checks the digest, so a damaged entry is dropped
(and trained again) rather than served to every later job. A cache folder that cannot be written turns the cache
off for the job with one log line (docs/design.md §11).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tinyflow.atomic import atomic_copy, atomic_path
from tinyflow.contracts import TrainResult

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
#: trainer options that change how training is shown or restarted, not what it produces
_NEUTRAL_TRAINER_KEYS = ("progress", "resume")


@cache
def code_digest() -> str:
    """SHA-256 over the source of the `tinyflow` and `tinyflow_plugins` packages (a code change misses the cache)."""
    import importlib

    roots: list[Path] = []
    for name in ("tinyflow", "tinyflow_plugins"):
        try:
            module = importlib.import_module(name)
        except ImportError:  # pragma: no cover - the plugins ship with tinyflow
            continue
        roots += [Path(p).resolve() for p in module.__path__]  # __path__: namespace packages have no __file__
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root.parent).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _trainer_options(cfg: DictConfig) -> dict[str, Any]:
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(trainer, dict)
    for name in _NEUTRAL_TRAINER_KEYS:
        trainer.pop(name, None)
    return trainer


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def train_key(cfg: DictConfig, width_mult: float | None, resolution: int | None) -> str:
    """The cache key of the `train` stage of `cfg` at the `space` stage's (width, resolution)."""
    import torch

    payload = {
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "search_space": OmegaConf.to_container(cfg.search_space, resolve=True),
        "trainer": _trainer_options(cfg),
        "seed": cfg.get("seed"),
        "width_mult": width_mult,
        "resolution": resolution,
        "torch": torch.__version__,
        "code": code_digest(),
    }
    return _digest(payload)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluation_key(cfg: DictConfig, checkpoint: str | Path) -> str:
    """The key of "accuracy of a subnet of this supernet": the checkpoint's bytes and how subnets are evaluated
    (the data and the trainer options, e.g. BatchNorm recalibration batches) and the code."""
    payload = {
        "checkpoint": file_digest(checkpoint),
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "trainer": _trainer_options(cfg),
        "code": code_digest(),
    }
    return _digest(payload)


@dataclass(frozen=True)
class TrainCache:
    """The cache directory; `lookup`/`store` entries by key, `lock` a key while it is being trained."""

    root: Path

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold an exclusive lock on `key` (other processes asking for it wait); a no-op where fcntl is missing."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        with open(self.root / f"{key}.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("train cache: another job is training %s; waiting for it to share the result", key)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def lookup(self, key: str, workdir: str | Path) -> TrainResult | None:
        """The cached result of `key` with its checkpoint copied into `workdir` (`cache_hit` set), or None on a
        miss. The checkpoint's SHA-256 recorded at `store` is checked first: an entry that fails it (or cannot be
        read) is dropped with a log line naming it, and the caller trains again. `source(key)` says which run
        trained it. Call it holding `lock(key)`."""
        entry = self.root / key
        result_file = entry / RESULT_FILE
        if not result_file.is_file():
            return None
        try:
            stored = json.loads(result_file.read_text())
            cached_ckpt = entry / stored["checkpoint_file"]
            result = TrainResult.from_dict(stored["result"])
            recorded = str(stored["checkpoint_sha256"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._drop(entry, f"unreadable or without a checkpoint digest ({type(exc).__name__}: {exc})")
            return None
        try:
            actual = file_digest(cached_ckpt)
        except OSError as exc:
            self._drop(entry, f"its checkpoint cannot be read ({exc})")
            return None
        if actual != recorded:
            self._drop(
                entry,
                f"its checkpoint {cached_ckpt.name} fails its digest (sha256 {actual[:12]}…, recorded "
                f"{recorded[:12]}…)",
            )
            return None
        target = Path(workdir) / cached_ckpt.name
        atomic_copy(cached_ckpt, target)
        return replace(result, checkpoint=str(target), cache_hit=True)

    def _drop(self, entry: Path, why: str) -> None:
        log.warning("train cache: dropping entry %s: %s; training again", entry, why)
        shutil.rmtree(entry, ignore_errors=True)

    def source(self, key: str) -> dict[str, str]:
        """`{"output_dir", "mlflow_run_id"}` of the run that trained `key` (empty when unknown)."""
        try:
            return dict(json.loads((self.root / key / RESULT_FILE).read_text()).get("source", {}))
        except (OSError, ValueError, AttributeError):
            return {}

    def store(self, key: str, result: TrainResult, source: dict[str, str]) -> Path | None:
        """Save `result` (with its checkpoint) under `key`; returns the entry, or None if the result cannot be saved."""
        entry = self.root / key
        if entry.exists():
            return entry
        ckpt = Path(result.checkpoint)
        try:
            text = json.dumps(
                {
                    "result": replace(result, cache_hit=False).to_dict(),
                    "checkpoint_file": ckpt.name,
                    "checkpoint_sha256": file_digest(ckpt),
                    "source": source,
                },
                sort_keys=True,
            )
        except (TypeError, ValueError) as exc:
            log.warning("train cache: result not JSON-serialisable (%s); not cached", exc)
            return None
        with atomic_path(entry, directory=True) as tmp:
            shutil.copyfile(ckpt, tmp / ckpt.name)
            (tmp / RESULT_FILE).write_text(text)
        return entry


def cache_dir(cfg: DictConfig, part: str) -> Path | None:
    """`<cache.dir>/<part>` when `cache.<part>` is on, else None."""
    node = cfg.get("cache")
    if node is None or not node.get(part, False):
        return None
    return Path(str(node.dir)).expanduser() / part


def writable_dir(root: Path, what: str) -> bool:
    """Whether files can be created in `root` (made if missing); else one log line saying `what` is off."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root) as probe:  # one byte: a full disk still creates empty files
            probe.write(b"x")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        log.warning("%s: %s cannot be written (%s); the cache is off for this job", what, root, exc.strerror or exc)
        return False
    return True


def train_cache(cfg: DictConfig) -> TrainCache | None:
    """The configured train cache (`cache.train`, under `cache.dir`), or None when it is off — or when its folder
    cannot be written (a read-only or full disk: one log line, and the job trains without the cache)."""
    root = cache_dir(cfg, "train")
    if root is None or not writable_dir(root, "train cache"):
        return None
    return TrainCache(root)
