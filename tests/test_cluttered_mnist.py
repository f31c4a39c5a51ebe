"""cluttered_mnist: deterministic per seed, cached on disk and reused, regenerated when the cache is corrupt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tinyflow.contracts import DataModule
from tinyflow.errors import ConfigError
from tinyflow_plugins.data import ClutteredMnistData

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"canvas": 40, "digit_scale": [0.4, 0.8], "clutter": 3, "clutter_size": 6}


def make(cache: Path, seed: int = 0, **kw: object) -> ClutteredMnistData:
    data = ClutteredMnistData(seed=seed, cache_dir=str(cache), **{**SMALL, **kw})
    data.setup()
    return data


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cluttered")


@pytest.fixture(scope="module")
def data(cache: Path) -> ClutteredMnistData:
    return make(cache)


def test_shapes_classes_and_splits(data: ClutteredMnistData) -> None:
    assert isinstance(data, DataModule)
    assert (data.name, data.num_classes, data.in_channels, data.resolution) == ("cluttered_mnist", 10, 1, 40)
    sizes = {s: len(data.split(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 4000, "val": 500, "test": 500}
    images = data.split("train").images
    assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (1, 40, 40)
    assert torch.bincount(data.split("test").labels, minlength=10).tolist() == [50] * 10
    # a digit plus clutter on a mostly black canvas
    lit = (images > 64).float().mean(dim=(1, 2, 3))
    assert float(lit.min()) > 0 and float(lit.mean()) < 0.25
    data.set_resolution(24)
    x, y = next(iter(data.val_dataloader()))
    assert tuple(x.shape[1:]) == (1, 24, 24) and x.dtype == torch.float32 and len(y) == len(x)


def test_deterministic_per_seed_and_options(data: ClutteredMnistData, tmp_path: Path) -> None:
    fresh = make(tmp_path)  # generated again in another folder
    assert torch.equal(fresh.split("train").images, data.split("train").images)
    assert torch.equal(fresh.split("test").labels, data.split("test").labels)
    other = make(tmp_path, seed=1)
    assert not torch.equal(other.split("train").images, data.split("train").images)
    assert other.cache_path != fresh.cache_path
    assert make(tmp_path, clutter=0).cache_path != fresh.cache_path


def test_the_cache_file_is_reused(data: ClutteredMnistData, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data.cache_path.parent == cache and data.cache_path.exists()
    assert not list(cache.glob(".*tmp"))  # written under a temporary name, then renamed

    def no_generation(self: ClutteredMnistData) -> None:
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(ClutteredMnistData, "generate", no_generation)
    again = make(cache)
    assert torch.equal(again.split("val").images, data.split("val").images)


def test_a_corrupt_cache_file_is_regenerated(data: ClutteredMnistData, tmp_path: Path) -> None:
    path = make(tmp_path).cache_path
    path.write_bytes(b"not a zip file")
    again = make(tmp_path)
    assert torch.equal(again.split("train").images, data.split("train").images)
    assert path.stat().st_size > 1000  # rewritten whole


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="canvas"):
        ClutteredMnistData(canvas=20, digit_scale=[0.5, 1.0], cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="digit_scale"):
        ClutteredMnistData(digit_scale=[0.9, 0.5], cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="clutter"):
        ClutteredMnistData(clutter_size=30, cache_dir=str(tmp_path))


def test_on_the_default_config_the_budget_binds() -> None:
    """The default task, grid and device: some cells do not fit and the space stage does not take the top corner."""
    from hydra import compose, initialize_config_dir

    import tinyflow
    from tinyflow.plugins import build_device, build_plugin
    from tinyflow.search.space_opt import optimize_space
    from tinyflow.stages.space import scheduler_costs

    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["tracking=none"])
    assert cfg.data._target_.endswith("ClutteredMnistData")
    device = build_device(cfg)
    space = build_plugin(cfg, "search_space")  # 1 channel, 10 classes: the same as the bound cluttered data
    result = optimize_space(
        space,
        cfg.space.widths,
        cfg.space.resolutions,
        scheduler_costs(cfg),
        device.sram_budget_bytes,
        device.flash_budget_bytes,
        samples_per_cell=200,
        min_fit_share=cfg.space.min_fit_share,
        progress=False,
    )
    top = (max(cfg.space.widths), max(cfg.space.resolutions))
    assert (result.best.width_mult, result.best.resolution) != top
    assert any(c.fit_share < cfg.space.min_fit_share for c in result.cells)
    assert result.best.resolution < max(cfg.space.resolutions)  # the SRAM caps the resolution


def test_eval_copies_place_each_held_apart_digit_again_and_never_a_training_digit(
    data: ClutteredMnistData, tmp_path: Path
) -> None:
    more = make(tmp_path, eval_copies=3)
    assert {s: len(more.split(s)) for s in ("train", "val", "test")} == {"train": 4000, "val": 1500, "test": 1500}
    assert torch.equal(more.split("train").images, data.split("train").images)  # the training canvases unchanged
    assert more.cache_path != make(tmp_path).cache_path
    val = more.split("val")
    # copy-major: each copy is every held-apart digit once, so a prefix of whole copies keeps the classes balanced
    assert torch.equal(val.labels[:500], val.labels[500:1000])
    assert torch.bincount(val.labels[:500], minlength=10).tolist() == [50] * 10
    # the copies are new canvases (fresh place, size and clutter), not the same image repeated
    assert not torch.equal(val.images[:500], val.images[500:1000])
    # no canvas of the val split carries a training digit: its digits are the eval_copies=1 split's digits
    assert torch.equal(val.labels[:500], data.split("val").labels)
    with pytest.raises(ConfigError, match="eval_copies"):
        ClutteredMnistData(cache_dir=str(tmp_path), eval_copies=0)
