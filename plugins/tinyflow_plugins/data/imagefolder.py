"""`imagefolder`: any class-per-folder image dataset (e.g. Visual Wake Words), loaded into memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyflow.errors import DataError
from tinyflow_plugins.data.base import SPLITS, InMemoryImageData

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolderData(InMemoryImageData):
    """`root/<class>/<image>` (splits cut by `seed`), or `root/{train,val,test}/<class>/<image>`.

    Images are decoded once, resized to `image_size`² and kept as uint8; RGB when `channels` is 3 (the
    network's input channels), grayscale when 1. `max_per_class` caps the images read per class and split.
    """

    name = "imagefolder"

    def __init__(
        self,
        root: str = "data/images",
        channels: int = 3,
        image_size: int = 96,
        max_per_class: int | None = None,
        hflip: bool = True,
        **kwargs: Any,
    ):
        super().__init__(channels=channels, hflip=hflip, **kwargs)
        self.root = root
        self.image_size = int(image_size)
        self.max_per_class = max_per_class
        self._classes: list[str] | None = None

    @property
    def native_channels(self) -> int:  # type: ignore[override]
        return int(self._channels or 3)

    @property
    def native_resolution(self) -> int:  # type: ignore[override]
        return self.image_size

    # ---- layout -------------------------------------------------------------------------------------------
    def _root(self) -> Path:
        root = Path(self.root).expanduser().resolve()
        if not root.is_dir():
            raise DataError(
                f"data=imagefolder: folder {root} does not exist. Set `data.root` to a folder with one sub-folder "
                "per class (root/<class>/<image>), or root/train/<class>/… and root/val/<class>/…"
            )
        return root

    def split_dirs(self) -> dict[str, Path]:
        """`{"train": dir}` for a flat layout, or the train/val/test folders of a pre-split layout."""
        root = self._root()
        pre = {s: root / s for s in SPLITS if (root / s).is_dir()}
        return pre if "train" in pre else {"train": root}

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            train = self.split_dirs()["train"]
            classes = sorted(
                d.name for d in train.iterdir() if d.is_dir() and not d.name.startswith(".") and _has_images(d)
            )
            if len(classes) < 2:
                found = f"only '{classes[0]}'" if classes else "none"
                raise DataError(
                    f"data=imagefolder: {train} needs at least 2 class sub-folders with images, found {found}. "
                    "Lay the data out as root/<class>/<image> (e.g. root/person, root/non_person for Visual "
                    "Wake Words) and set `data.root` to root."
                )
            self._classes = classes
        return self._classes

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        """Class sub-folders found; 0 while the folder is missing or invalid (`setup()` raises the DataError)."""
        try:
            return len(self.classes)
        except DataError:
            return 0

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        classes = self.classes  # raises the DataError that explains a missing / single-class folder
        out = {}
        for split, folder in self.split_dirs().items():
            out[split] = self._read_split(folder, classes)
        return out

    def _read_split(self, folder: Path, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image, UnidentifiedImageError

        mode = "L" if self.in_channels == 1 else "RGB"
        size = (self.image_size, self.image_size)
        images, labels = [], []
        for label, cls in enumerate(classes):
            files = sorted(p for p in (folder / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if self.max_per_class is not None:
                files = files[: self.max_per_class]
            for path in files:
                try:
                    with Image.open(path) as img:
                        arr = np.asarray(img.convert(mode).resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)
                except (OSError, UnidentifiedImageError) as exc:
                    raise DataError(f"data=imagefolder: cannot read image {path} ({exc}); remove or fix it") from None
                images.append(arr.reshape(*size, -1).transpose(2, 0, 1))
                labels.append(label)
        if not images:
            raise DataError(f"data=imagefolder: no images under {folder} for classes {classes}")
        return torch.from_numpy(np.stack(images)), torch.as_tensor(labels, dtype=torch.long)


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())
