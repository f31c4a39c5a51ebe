"""In-memory image classification data with elastic resolution, shared by every built-in data plugin.

Images live in memory as uint8 `N×C×H×W` tensors. A DataLoader fetches whole batches at once (`__getitems__`)
and its collate function turns them into float tensors: channel conversion, resize to the current resolution
(`set_resolution`), random shift / flip when training, normalisation with the training split's mean and std.
Because resizing happens per batch, changing the resolution is free and nothing is cached per resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from tinyflow.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


class ImageBatches(Dataset):
    """uint8 images `N×C×H×W` and int64 labels; `__getitems__` returns one stacked batch (no per-sample collate)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 N×C×H×W, got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], self.labels[idx]


@dataclass
class BatchTransform:
    """Collate function: uint8 batch -> normalised float batch at `resolution` (augmented when `train`)."""

    resolution: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: bool = False
    shift: float = 0.0  # max random translation, as a fraction of the resolution
    hflip: bool = False

    def __call__(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, tuple):
            images, labels = batch
        else:  # a plain list of samples (a sampler without batched fetch)
            images = torch.stack([b[0] for b in batch])
            labels = torch.stack([torch.as_tensor(b[1]) for b in batch])
        x = to_float_channels(images, self.channels)
        x = resize(x, self.resolution)
        if self.train:
            x = random_shift(x, round(self.shift * self.resolution))
            if self.hflip:
                flip = torch.rand(len(x)) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std, labels.long()


def to_float_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 -> float in [0, 1], converting grayscale <-> RGB to `channels`."""
    x = images.float().div_(255.0)
    have = x.shape[1]
    if have == channels:
        return x
    if have == 1:
        return x.expand(-1, channels, -1, -1).contiguous()
    if have == 3 and channels == 1:  # ITU-R 601 luma, as PIL's "L" mode
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    raise ConfigError(f"data.channels: cannot convert {have}-channel images to {channels} channels (use 1 or 3)")


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear resize to `resolution`² (antialiased when shrinking)."""
    if x.shape[-2:] == (resolution, resolution):
        return x
    shrink = resolution < max(x.shape[-2:])
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrink)


def random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Translate each image by a random integer offset in [-pad, pad] (zero fill), vectorised over the batch."""
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,))
    ox = torch.randint(0, 2 * pad + 1, (n,))
    rows = (oy[:, None] + torch.arange(h))[:, :, None]  # n×h×1
    cols = (ox[:, None] + torch.arange(w))[:, None, :]  # n×1×w
    out = padded[torch.arange(n)[:, None, None], :, rows, cols]  # n×h×w×c
    return out.permute(0, 3, 1, 2).contiguous()


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train / val / test: per class, a seeded permutation cut by the fractions (exactly stratified)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"data.val_fraction={val_fraction}, data.test_fraction={test_fraction}: each must be in [0, 1) "
            "and together below 1"
        )
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = round(len(idx) * test_fraction)
        n_val = round(len(idx) * val_fraction)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    train, val, test = (np.sort(np.concatenate(parts[s])) for s in SPLITS)
    return train, val, test


class InMemoryImageData(pl.LightningDataModule):
    """Base class: subclasses implement `_load()`; this class splits, normalises, resizes and serves batches.

    `_load()` returns `{"train": (images, labels), ...}`; splits it does not return ("val", "test") are cut
    from "train" by a seeded stratified split.
    """

    name: str = "images"
    native_channels: int = 1
    native_resolution: int = 28

    def __init__(
        self,
        *,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        augment: bool = True,
        shift: float = 0.1,
        hflip: bool = False,
        channels: int | None = None,
        resolution: int | None = None,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}")
        if channels is not None and channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 (grayscale), 3 (RGB) or null (native), got {channels}")
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or 2 * batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.augment = bool(augment)
        self.shift = float(shift)
        self.hflip = bool(hflip)
        self._channels = channels
        self._resolution = int(resolution) if resolution else None
        self.max_train_samples = max_train_samples
        self.max_eval_samples = max_eval_samples
        self._splits: dict[str, ImageBatches] | None = None
        self.mean: tuple[float, ...] = ()
        self.std: tuple[float, ...] = ()

    # ---- contract ---------------------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return int(self._channels or self.native_channels)

    @property
    def resolution(self) -> int:
        return self._resolution or self.native_resolution

    def set_resolution(self, resolution: int) -> None:
        """Serve images at `resolution`² from now on (loaders made after this call)."""
        if int(resolution) < 1:
            raise ConfigError(f"resolution must be a positive integer, got {resolution}")
        self._resolution = int(resolution)

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        loaded = self._load()
        images, labels = loaded["train"]
        missing = [s for s in ("val", "test") if s not in loaded]
        if missing:
            val_f = self.val_fraction if "val" in missing else 0.0
            test_f = self.test_fraction if "test" in missing else 0.0
            tr, va, te = stratified_split(labels.numpy(), val_f, test_f, self.seed)
            loaded["train"] = (images[tr], labels[tr])
            if "val" in missing:
                loaded["val"] = (images[va], labels[va])
            if "test" in missing:
                loaded["test"] = (images[te], labels[te])
        splits = {}
        for split in SPLITS:
            imgs, labs = loaded[split]
            limit = self.max_train_samples if split == "train" else self.max_eval_samples
            if limit is not None and limit < len(imgs):
                keep = torch.from_numpy(np.sort(np.random.default_rng(self.seed).permutation(len(imgs))[:limit]))
                imgs, labs = imgs[keep], labs[keep]
            if len(imgs) == 0:
                raise DataError(
                    f"data ({self.name}): the {split} split is empty; lower data.val_fraction/data.test_fraction "
                    "or add images"
                )
            splits[split] = ImageBatches(imgs, labs)
        self.mean, self.std = channel_stats(splits["train"].images, self.in_channels)
        self._splits = splits

    def split(self, name: str) -> ImageBatches:
        """The dataset of one split (`train`, `val`, `test`)."""
        if name not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got '{name}'")
        self.setup()
        assert self._splits is not None
        return self._splits[name]

    def transform(self, train: bool) -> BatchTransform:
        self.setup()
        return BatchTransform(
            resolution=self.resolution,
            channels=self.in_channels,
            mean=self.mean,
            std=self.std,
            train=train and self.augment,
            shift=self.shift,
            hflip=self.hflip,
        )

    def _loader(self, split: str, train: bool) -> DataLoader:
        ds = self.split(split)
        batch_size = self.batch_size if train else self.eval_batch_size
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train and len(ds) > batch_size,  # a last batch of one breaks BatchNorm
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.transform(train),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def loader(self, split: str, train: bool = False) -> DataLoader:
        """A loader for any split; `train=True` shuffles and augments."""
        return self._loader(split, train)

    def calibration_batch(self, n: int = 64, split: str = "train") -> torch.Tensor:
        """`n` un-augmented, normalised images at the current resolution (int8 calibration, ONNX checks)."""
        ds = self.split(split)
        idx = torch.from_numpy(np.random.default_rng(self.seed).permutation(len(ds))[: min(n, len(ds))])
        x, _ = self.transform(train=False)(ds.__getitems__(idx.tolist()))
        return x

    def describe(self) -> dict[str, Any]:
        """Sizes and settings, for logging as params."""
        self.setup()
        assert self._splits is not None
        return {
            "data.name": self.name,
            "data.num_classes": self.num_classes,
            "data.in_channels": self.in_channels,
            "data.resolution": self.resolution,
            **{f"data.n_{s}": len(self._splits[s]) for s in SPLITS},
        }


def channel_stats(images: torch.Tensor, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (after channel conversion), in [0, 1] units."""
    means, sq = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
    count = 0
    for start in range(0, len(images), 4096):
        x = to_float_channels(images[start : start + 4096], channels).double()
        means += x.sum(dim=(0, 2, 3))
        sq += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = means / count
    std = (sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(float(m) for m in mean), tuple(max(float(s), 1e-3) for s in std)
