"""`cluttered_mnist`: translated, cluttered MNIST built from the bundled MNIST 5k — accuracy depends on resolution.

Each digit is scaled to a random size, placed at a random position on a larger black canvas and surrounded by
clutter: small patches cropped from other digits (the "cluttered translated MNIST" of Mnih et al., "Recurrent
Models of Visual Attention", NeurIPS 2014, 60×60 / 100×100 canvases; Jaderberg et al., "Spatial Transformer
Networks", NeurIPS 2015). Downscaled to a low input resolution a small digit becomes a few pixels and the clutter
looks like digits, so the resolution a device's SRAM allows decides the accuracy, as Visual Wake Words does for
MCUNet.

The digits are split into train / val / test first (stratified by `seed`), and each split's canvases draw their
clutter from the same split only. Generation is deterministic per (seed, options) and cached on disk as one `.npz`
(written to a temporary name, then renamed), so a run reads it back in well under a second; an unreadable cache
file is regenerated. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tinyflow.errors import ConfigError
from tinyflow_plugins.data.base import SPLITS, InMemoryImageData, stratified_split
from tinyflow_plugins.data.mnist5k import _mnist5k

log = logging.getLogger(__name__)

#: bump when the generator changes, so old cache files are not reused
GENERATOR_VERSION = 1  # seeds the generator: the train split and eval_copies=1 canvases are as before
MNIST_SIZE = 28


class ClutteredMnistData(InMemoryImageData):
    """Cluttered, translated MNIST digits on a `canvas`² grayscale canvas (10 classes), one canvas per MNIST digit.

    `digit_scale`: [min, max] size of a digit as a factor of its 28 px (uniform); `clutter`: patches per canvas,
    each `clutter_size` px cropped from another digit of the same split at a random scale from `digit_scale`;
    `copies`: canvases per training digit (each with its own size, place and clutter); `eval_copies`: canvases per
    held-apart digit of the val and test splits (more canvases of the same held-apart digits: an accuracy's standard
    error shrinks as 1/sqrt(canvases), no training digit ever appears); `cache_dir`: where the generated arrays are
    kept (null: the outputs cache, `outputs/cache/data`).
    """

    name = "cluttered_mnist"
    num_classes = 10
    native_channels = 1

    def __init__(
        self,
        *,
        canvas: int = 64,
        digit_scale: Sequence[float] = (0.5, 0.9),
        clutter: int = 2,
        clutter_size: int = 6,
        copies: int = 1,
        eval_copies: int = 1,
        cache_dir: str | None = None,
        **kwargs: object,
    ):
        super().__init__(**kwargs)  # type: ignore[arg-type]
        lo, hi = (float(s) for s in _pair(digit_scale))
        if int(canvas) < MNIST_SIZE * hi or int(canvas) < 1:
            raise ConfigError(
                f"data.canvas={canvas} is smaller than the largest digit ({MNIST_SIZE} px x {hi} = "
                f"{MNIST_SIZE * hi:.0f} px); raise data.canvas or lower data.digit_scale"
            )
        if not 0 < lo <= hi:
            raise ConfigError(f"data.digit_scale must be [min, max] with 0 < min <= max, got {list(digit_scale)}")
        if int(clutter) < 0 or not 1 <= int(clutter_size) <= MNIST_SIZE * lo:
            raise ConfigError(
                f"data.clutter must be >= 0 and data.clutter_size in [1, {MNIST_SIZE * lo:.0f}] (the smallest digit), "
                f"got clutter={clutter}, clutter_size={clutter_size}"
            )
        for name, value in (("copies", copies), ("eval_copies", eval_copies)):
            if int(value) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {value}")
        self.canvas = int(canvas)
        self.native_resolution = self.canvas
        self.digit_scale = (lo, hi)
        self.clutter = int(clutter)
        self.clutter_size = int(clutter_size)
        self.copies = int(copies)
        self.eval_copies = int(eval_copies)
        self.cache_dir = Path(cache_dir) if cache_dir else _default_cache_dir()

    # ---- cache -------------------------------------------------------------------------------------------
    def options(self) -> dict[str, object]:
        """Everything the generated arrays depend on (the cache key)."""
        return {
            "version": GENERATOR_VERSION,
            "seed": self.seed,
            "canvas": self.canvas,
            "digit_scale": list(self.digit_scale),
            "clutter": self.clutter,
            "clutter_size": self.clutter_size,
            "copies": self.copies,
            "eval_copies": self.eval_copies,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
        }

    @property
    def cache_path(self) -> Path:
        key = hashlib.sha256(json.dumps(self.options(), sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / f"cluttered_mnist_c{self.canvas}_s{self.seed}_{key}.npz"

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        arrays = _read_cache(self.cache_path)
        if arrays is None:
            arrays = self.generate()
            _write_cache(self.cache_path, arrays)
        return {s: (torch.from_numpy(arrays[f"{s}_x"]), torch.from_numpy(arrays[f"{s}_y"])) for s in SPLITS}

    # ---- generation --------------------------------------------------------------------------------------
    def generate(self) -> dict[str, np.ndarray]:
        """The canvases of every split as uint8 N×1×canvas×canvas and int64 labels (deterministic per options)."""
        images, labels = _mnist5k()
        parts = stratified_split(labels, self.val_fraction, self.test_fraction, self.seed)
        out: dict[str, np.ndarray] = {}
        for i, (split, idx) in enumerate(zip(SPLITS, parts)):
            rng = np.random.default_rng([self.seed, GENERATOR_VERSION, i])
            copies = self.copies if split == "train" else self.eval_copies
            x = self._canvases(images[idx, 0], rng, copies)
            out[f"{split}_x"] = x[:, None]
            out[f"{split}_y"] = np.tile(labels[idx], copies).astype(np.int64)
        return out

    def _canvases(self, digits: np.ndarray, rng: np.random.Generator, copies: int) -> np.ndarray:
        """`copies` canvases per digit, copy-major: the first len(digits) are one canvas of every digit, so any
        prefix of whole copies is class-balanced like the split."""
        n = len(digits) * copies
        src = np.tile(np.arange(len(digits)), copies)
        canvas = np.zeros((n, self.canvas, self.canvas), dtype=np.uint8)
        # clutter first, the digit on top (pixel-wise max), so a patch never hides the digit
        if self.clutter and len(digits) > 1:
            k = self.clutter_size
            others = (src[:, None] + rng.integers(1, len(digits), (n, self.clutter))) % len(digits)  # never itself
            sizes = _sizes(rng, (n, self.clutter), self.digit_scale)
            for j in range(self.clutter):
                scaled = _scaled(digits[others[:, j]], sizes[:, j])
                for m in range(n):
                    img = scaled[m]
                    s = len(img)
                    oy, ox = rng.integers(0, s - k + 1, 2)
                    patch = img[oy : oy + k, ox : ox + k]
                    py, px = rng.integers(0, self.canvas - k + 1, 2)
                    view = canvas[m, py : py + k, px : px + k]
                    np.maximum(view, patch, out=view)
        sizes = _sizes(rng, (n,), self.digit_scale)
        scaled = _scaled(digits[src], sizes)
        for m in range(n):
            img = scaled[m]
            s = len(img)
            py, px = rng.integers(0, self.canvas - s + 1, 2)
            view = canvas[m, py : py + s, px : px + s]
            np.maximum(view, img, out=view)
        return canvas

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "data.canvas": self.canvas,
            "data.digit_scale": list(self.digit_scale),
            "data.clutter": self.clutter,
            "data.eval_copies": self.eval_copies,
        }


def _pair(value: Sequence[float]) -> tuple[float, float]:
    vals = list(value)
    if len(vals) != 2:
        raise ConfigError(f"data.digit_scale must be [min, max], got {vals}")
    return float(vals[0]), float(vals[1])


def _sizes(rng: np.random.Generator, shape: tuple[int, ...], scale: tuple[float, float]) -> np.ndarray:
    """Integer digit sizes in px, uniform over the scale range."""
    return np.maximum(1, np.rint(MNIST_SIZE * rng.uniform(scale[0], scale[1], shape))).astype(np.int64)


def _scaled(digits: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """Each 28×28 digit resized (antialiased bilinear) to its size², as uint8 arrays."""
    out: list[np.ndarray] = [np.empty(0, np.uint8)] * len(digits)
    x = torch.from_numpy(digits).float()[:, None]
    for s in np.unique(sizes):
        idx = np.flatnonzero(sizes == s)
        y = F.interpolate(x[idx], size=(int(s), int(s)), mode="bilinear", align_corners=False, antialias=True)
        y = y[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
        for k, i in enumerate(idx):
            out[i] = y[k]
    return out


def _default_cache_dir() -> Path:
    from tinyflow import OUTPUTS_DIR

    return OUTPUTS_DIR / "cache" / "data"


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or unreadable (then it is regenerated)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        if all(f"{s}_{a}" in arrays for s in SPLITS for a in "xy"):
            return arrays
        log.warning("cluttered_mnist: cache file %s lacks arrays; regenerating", path)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("cluttered_mnist: cache file %s is unreadable (%s); regenerating", path, exc)
    return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write to a temporary name in the same folder, then rename: readers see the old file or the whole new one."""
    from tinyflow.atomic import atomic_open

    with atomic_open(path, "wb", suffix=".tmp") as handle:
        np.savez(handle, **arrays)
