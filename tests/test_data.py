"""Data plugins: deterministic stratified splits, resolution-following shapes, augmentation, clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tinyflow.contracts import DataModule
from tinyflow.errors import ConfigError, DataError
from tinyflow_plugins.data import Cifar10Data, DigitsData, ImageFolderData, Mnist5kData
from tinyflow_plugins.data.base import random_shift, stratified_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mnist() -> Mnist5kData:
    data = Mnist5kData(seed=0)
    data.setup()
    return data


def test_mnist5k_split_sizes_and_stratification(mnist: Mnist5kData) -> None:
    assert isinstance(mnist, DataModule)
    assert (mnist.name, mnist.num_classes, mnist.in_channels) == ("mnist5k", 10, 1)
    sizes = {s: len(mnist.split(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 4000, "val": 500, "test": 500}
    for split, per_class in (("train", 400), ("val", 50), ("test", 50)):
        counts = torch.bincount(mnist.split(split).labels, minlength=10)
        assert counts.tolist() == [per_class] * 10, split


def test_mnist5k_split_is_deterministic_per_seed(mnist: Mnist5kData) -> None:
    same = Mnist5kData(seed=0)
    other = Mnist5kData(seed=1)
    assert torch.equal(same.split("val").images, mnist.split("val").images)
    assert torch.equal(same.split("test").labels, mnist.split("test").labels)
    assert not torch.equal(other.split("val").images, mnist.split("val").images)


def test_stratified_split_partitions_every_index() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 30])
    train, val, test = stratified_split(labels, 0.2, 0.1, seed=7)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(60))
    assert np.bincount(labels[val]).tolist() == [2, 4, 6]
    assert np.bincount(labels[test]).tolist() == [1, 2, 3]
    again = stratified_split(labels, 0.2, 0.1, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    with pytest.raises(ConfigError, match="val_fraction"):
        stratified_split(labels, 0.6, 0.5, seed=0)


@pytest.mark.parametrize("resolution", [16, 28, 40])
def test_batches_follow_the_resolution(mnist: Mnist5kData, resolution: int) -> None:
    mnist.set_resolution(resolution)
    x, y = next(iter(mnist.train_dataloader()))
    assert x.shape == (mnist.batch_size, 1, resolution, resolution) and x.dtype == torch.float32
    assert y.shape == (mnist.batch_size,) and y.dtype == torch.long
    xv, _ = next(iter(mnist.val_dataloader()))
    assert xv.shape[1:] == (1, resolution, resolution)


def test_eval_batches_are_normalised_and_repeatable(mnist: Mnist5kData) -> None:
    mnist.set_resolution(28)
    first = torch.cat([x for x, _ in mnist.loader("train", train=False)])
    second = torch.cat([x for x, _ in mnist.loader("train", train=False)])
    assert torch.equal(first, second)
    assert abs(float(first.mean())) < 1e-3 and abs(float(first.std()) - 1) < 1e-3


def test_rgb_conversion_and_digits_native_size() -> None:
    digits = DigitsData(channels=3, batch_size=32)
    assert digits.in_channels == 3 and digits.resolution == 8
    x, _ = next(iter(digits.train_dataloader()))
    assert x.shape == (32, 3, 8, 8)
    assert torch.equal(x[:, 0], x[:, 1])  # grey repeated
    assert sum(len(digits.split(s)) for s in ("train", "val", "test")) == 1797


def test_random_shift_moves_content_within_the_pad() -> None:
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    out = random_shift(x, 2)
    assert out.shape == x.shape
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 9, pos % 9
    assert out.flatten(1).sum(1).eq(1).all()  # a pad of 2 never pushes the centre pixel out
    assert rows.sub(4).abs().max() <= 2 and cols.sub(4).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5  # offsets really vary


def test_training_batches_are_augmented(mnist: Mnist5kData) -> None:
    mnist.set_resolution(28)
    torch.manual_seed(0)
    ds = mnist.split("train")
    idx = list(range(16))
    clean, _ = mnist.transform(train=False)(ds.__getitems__(idx))
    shifted, _ = mnist.transform(train=True)(ds.__getitems__(idx))
    assert not torch.equal(clean, shifted)


def _write_cifar(folder: Path, per_batch: int = 20) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [i % 10 for i in range(per_batch)],
        }
        with (folder / name).open("wb") as fh:
            pickle.dump(entry, fh)


def test_cifar10_reads_a_local_pickle_folder(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py")
    data = Cifar10Data(root=str(tmp_path), batch_size=10, val_fraction=0.1)  # the parent folder also works
    data.setup()
    assert (data.num_classes, data.in_channels) == (10, 3)
    assert len(data.split("test")) == 20
    assert len(data.split("train")) + len(data.split("val")) == 100
    data.set_resolution(24)
    x, _ = next(iter(data.train_dataloader()))
    assert x.shape == (10, 3, 24, 24)


def test_missing_cifar10_says_where_to_put_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    data = Cifar10Data(root=str(missing))
    with pytest.raises(DataError) as err:
        data.setup()
    message = str(err.value)
    assert str(missing) in message and "data.root" in message and "data_batch_1" in message


def test_corrupt_cifar10_batch_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "cifar"
    _write_cifar(folder)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        Cifar10Data(root=str(folder)).setup()


def _write_images(folder: Path, classes: dict[str, int], size: int = 12) -> None:
    rng = np.random.default_rng(1)
    for c, (name, count) in enumerate(classes.items()):
        (folder / name).mkdir(parents=True)
        for i in range(count):
            arr = rng.integers(0, 60, (size, size + 4, 3), dtype=np.uint8) + 60 * c
            Image.fromarray(arr).save(folder / name / f"{i}.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_imagefolder_loads_rgb_or_grayscale(tmp_path: Path, channels: int) -> None:
    _write_images(tmp_path, {"non_person": 10, "person": 10})
    data = ImageFolderData(root=str(tmp_path), channels=channels, image_size=16, batch_size=4)
    assert data.classes == ["non_person", "person"] and data.num_classes == 2
    data.setup()
    assert [len(data.split(s)) for s in ("train", "val", "test")] == [16, 2, 2]
    data.set_resolution(20)
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (4, channels, 20, 20) and set(y.tolist()) <= {0, 1}


def test_imagefolder_with_presplit_folders(tmp_path: Path) -> None:
    _write_images(tmp_path / "train", {"a": 6, "b": 6})
    _write_images(tmp_path / "val", {"a": 2, "b": 3})
    data = ImageFolderData(root=str(tmp_path), image_size=8, test_fraction=0.5)
    data.setup()
    assert len(data.split("val")) == 5
    assert len(data.split("train")) == 6 and len(data.split("test")) == 6


def test_single_class_imagefolder_is_a_clear_error(tmp_path: Path) -> None:
    _write_images(tmp_path, {"person": 5})
    data = ImageFolderData(root=str(tmp_path))
    assert data.num_classes == 0  # not an exception on attribute access (protocol checks use hasattr)
    with pytest.raises(DataError, match=r"at least 2 class.*only 'person'"):
        data.setup()


def test_missing_imagefolder_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.root"):
        ImageFolderData(root=str(tmp_path / "absent")).setup()


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        Mnist5kData(batch_size=0)
    with pytest.raises(ConfigError, match=r"data\.channels"):
        Mnist5kData(channels=2)
