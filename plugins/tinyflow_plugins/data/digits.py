"""`digits`: scikit-learn's bundled 8×8 handwritten digits (1,797 images, 16 grey levels)."""

from __future__ import annotations

import numpy as np
import torch

from tinyflow_plugins.data.base import InMemoryImageData


class DigitsData(InMemoryImageData):
    """8×8 grayscale digits from `sklearn.datasets.load_digits`, split train/val/test stratified by `seed`."""

    name = "digits"
    num_classes = 10
    native_channels = 1
    native_resolution = 8

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        from sklearn.datasets import load_digits

        d = load_digits()
        # pixel values are 0..16; scale to the 0..255 range every plugin stores
        images = np.round(np.asarray(d.images) * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
        return {"train": (torch.from_numpy(images), torch.from_numpy(np.asarray(d.target).astype(np.int64)))}
