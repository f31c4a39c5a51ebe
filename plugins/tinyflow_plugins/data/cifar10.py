"""`cifar10`: CIFAR-10 from a local folder in the python-pickle format (never downloaded), read by an unpickler
that admits numpy arrays only, so a batch file cannot run code (docs/design.md §13)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyflow.errors import DataError
from tinyflow_plugins.data.base import InMemoryImageData

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
SUBDIR = "cifar-10-batches-py"


class Cifar10Data(InMemoryImageData):
    """32×32 RGB, 10 classes. `root` is the `cifar-10-batches-py` folder (or a folder that contains it).

    The 50,000 training images give train and val (stratified by `seed`); `test_batch` is the test split.
    """

    name = "cifar10"
    num_classes = 10
    native_channels = 3
    native_resolution = 32

    def __init__(self, root: str = "data/cifar-10-batches-py", hflip: bool = True, **kwargs: Any):
        super().__init__(hflip=hflip, **kwargs)
        self.root = root

    def batch_dir(self) -> Path:
        """The folder holding the pickle batches; a DataError saying where to put them if it is missing."""
        root = Path(self.root).expanduser().resolve()
        for candidate in (root, root / SUBDIR):
            if all((candidate / f).is_file() for f in (*TRAIN_FILES, TEST_FILE)):
                return candidate
        missing = [f for f in (*TRAIN_FILES, TEST_FILE) if not (root / f).is_file()]
        raise DataError(
            f"data=cifar10: CIFAR-10 not found at {root} (missing {', '.join(missing)}). Put the python-pickle "
            f"batches (the '{SUBDIR}' folder of cifar-10-python.tar.gz, "
            "https://www.cs.toronto.edu/~kriz/cifar.html: "
            f"{', '.join(TRAIN_FILES)}, {TEST_FILE}) in that folder, or point the config key `data.root` at it, "
            "e.g. `data.root=/path/to/cifar-10-batches-py`. tinyflow never downloads data."
        )

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        folder = self.batch_dir()
        train = [_read_batch(folder / f) for f in TRAIN_FILES]
        test = _read_batch(folder / TEST_FILE)
        images = torch.cat([t[0] for t in train])
        labels = torch.cat([t[1] for t in train])
        return {"train": (images, labels), "test": test}


#: the only globals a CIFAR-10 batch refers to: numpy's array rebuilders (old and new module names) and the bytes
#: decoder of protocol 2. Anything else — `os.system`, `builtins.eval`, any class — is refused before it is called.
_BATCH_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Reads a CIFAR-10 batch (a dict of lists, bytes and numpy arrays) without running code the file names."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _BATCH_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load {module}.{name} (a CIFAR-10 batch holds only arrays)")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        with path.open("rb") as fh:
            entry = _BatchUnpickler(fh, encoding="bytes").load()
        data = np.asarray(entry[b"data"] if b"data" in entry else entry["data"], dtype=np.uint8)
        labels = entry.get(b"labels", entry.get("labels"))
        images = data.reshape(-1, 3, 32, 32)
        if labels is None or len(labels) != len(images):
            raise ValueError("labels missing or of the wrong length")
    except Exception as exc:
        raise DataError(
            f"data=cifar10: {path} is not a CIFAR-10 python-pickle batch ({type(exc).__name__}: {exc}). "
            "Re-extract cifar-10-python.tar.gz into `data.root`."
        ) from None
    return torch.from_numpy(images.copy()), torch.as_tensor(np.asarray(labels), dtype=torch.long)
