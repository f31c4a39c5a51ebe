"""Built-in data plugins: `cluttered_mnist` (default), `mnist5k` (the quick task), `digits`, `cifar10`, `imagefolder`.

Each is a `pytorch_lightning.LightningDataModule` satisfying `tinyflow.contracts.DataModule`. Images are held
in memory as uint8 tensors; every batch is resized to the arch's resolution (elastic resolution) and augmented
on the fly, so changing the resolution costs nothing.
"""

from tinyflow_plugins.data.base import ImageBatches, InMemoryImageData
from tinyflow_plugins.data.cifar10 import Cifar10Data
from tinyflow_plugins.data.cluttered_mnist import ClutteredMnistData
from tinyflow_plugins.data.digits import DigitsData
from tinyflow_plugins.data.imagefolder import ImageFolderData
from tinyflow_plugins.data.mnist5k import Mnist5kData

__all__ = [
    "Cifar10Data",
    "ClutteredMnistData",
    "DigitsData",
    "ImageBatches",
    "ImageFolderData",
    "InMemoryImageData",
    "Mnist5kData",
]
