"""The content-addressed train cache: keys, entries, the lock, and a real parallel sweep that trains once."""

from __future__ import annotations

import filecmp
import json
import threading
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from tinyflow import CONF_DIR
from tinyflow.contracts import TrainResult
from tinyflow.training.cache import TrainCache, train_key


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def test_key_follows_what_changes_the_training() -> None:
    base = train_key(_cfg(), 0.35, 28)
    assert train_key(_cfg(), 0.35, 28) == base
    assert train_key(_cfg("trainer.progress=false"), 0.35, 28) == base  # display only
    assert train_key(_cfg("device=stm32h743"), 0.35, 28) == base  # the device acts through (width, resolution)
    assert train_key(_cfg("seed=1"), 0.35, 28) != base
    assert train_key(_cfg("trainer.weight_decay=1e-4"), 0.35, 28) != base
    assert train_key(_cfg("data.max_train_samples=100"), 0.35, 28) != base
    assert train_key(_cfg(), 0.5, 28) != base
    assert train_key(_cfg(), 0.35, 32) != base


def _result(tmp_path: Path) -> TrainResult:
    ckpt = tmp_path / "job0" / "train" / "supernet.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights" * 100)
    return TrainResult(kind="supernet", checkpoint=str(ckpt), metrics={"val_acc_largest": 0.9}, wall_time_s=12.0)


def test_store_then_lookup_copies_the_checkpoint_into_the_new_run(tmp_path: Path) -> None:
    cache = TrainCache(tmp_path / "cache")
    assert cache.lookup("k", tmp_path / "job1" / "train") is None
    result = _result(tmp_path)
    entry = cache.store("k", result, {"output_dir": "job0", "mlflow_run_id": "abc"})
    assert entry is not None and not any(p.name.startswith(".") for p in cache.root.iterdir())
    hit = cache.lookup("k", tmp_path / "job1" / "train")
    assert hit is not None
    assert Path(hit.checkpoint) == tmp_path / "job1" / "train" / "supernet.ckpt"
    assert filecmp.cmp(hit.checkpoint, result.checkpoint, shallow=False)
    assert hit == TrainResult("supernet", hit.checkpoint, {"val_acc_largest": 0.9}, 12.0, None, cache_hit=True)
    assert cache.source("k")["mlflow_run_id"] == "abc"
    model = TrainResult("model", result.checkpoint, {"val_accuracy": 0.5}, 1.0, {"kind": "static", "arch": {}})
    cache.store("m", model, {})
    assert cache.lookup("m", tmp_path / "job2") == TrainResult(
        "model", str(tmp_path / "job2" / "supernet.ckpt"), {"val_accuracy": 0.5}, 1.0, model.network, cache_hit=True
    )


def test_a_damaged_entry_is_a_miss_not_an_error(tmp_path: Path) -> None:
    cache = TrainCache(tmp_path / "cache")
    result = _result(tmp_path)
    cache.store("k", result, {})
    (cache.root / "k" / "supernet.ckpt").unlink()
    assert cache.lookup("k", tmp_path / "job1") is None
    assert not (cache.root / "k").exists()  # dropped, so the next store writes it again
    cache.store("k", result, {})
    (cache.root / "k" / "result.json").write_text("{not json")
    assert cache.lookup("k", tmp_path / "job1") is None
    assert not (cache.root / "k").exists()


def test_the_lock_makes_a_second_job_wait(tmp_path: Path) -> None:
    cache = TrainCache(tmp_path / "cache")
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with cache.lock("k"):
            inside.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(5)
    with cache.lock("k"):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]


def _two_device_sweep(run_cli, tmp_path: Path, stages: str, *launcher: str) -> list[dict]:
    """A debug=fast multirun of `stages` for two devices whose budgets do not bind; the jobs' contexts."""
    res = run_cli(
        f"stages={stages}",
        "debug=fast",
        "device=custom",
        "device.sram_kb=256,512",
        "device.flash_kb=1024",
        *launcher,
        multirun=True,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return [json.loads((tmp_path / "multirun" / str(i) / "context.json").read_text()) for i in range(2)]


@pytest.mark.slow
def test_a_parallel_device_sweep_trains_the_supernet_once(run_cli, tmp_path: Path, store_uri: str) -> None:
    contexts = _two_device_sweep(run_cli, tmp_path, "[space,train]", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert contexts[0]["width_mult"] == contexts[1]["width_mult"]  # same cell, so the same training
    hits = sorted(c["metrics"]["train_cache_hit"] for c in contexts)
    assert hits == [0.0, 1.0]
    assert filecmp.cmp(contexts[0]["supernet_checkpoint"], contexts[1]["supernet_checkpoint"], shallow=False)
    accs = [{k: v for k, v in c["metrics"].items() if k.startswith("supernet_")} for c in contexts]
    assert accs[0] == accs[1] and accs[0]
    client = MlflowClient(tracking_uri=store_uri)
    exp = client.get_experiment_by_name("tinyflow")
    tags = [r.data.tags for r in client.search_runs([exp.experiment_id], "tags.`train.cache` != ''")]
    assert sorted(t["train.cache"] for t in tags) == ["hit", "miss"]
    hit = next(t for t in tags if t["train.cache"] == "hit")
    miss_run = client.search_runs([exp.experiment_id], "tags.`train.cache` = 'miss'")[0]
    assert hit["train.cache_source_run"] == miss_run.info.run_id


def _arch(i: int):
    import random

    from tinyflow.arch.space import MBConvSpace

    return MBConvSpace().sample(random.Random(i))


def test_accuracy_memo_persists_and_counts(tmp_path: Path) -> None:
    from tinyflow.search.accuracy_memo import AccuracyMemo

    calls: list[str] = []

    def measure(arch) -> float:
        calls.append(arch.key())
        return 0.5 + 0.01 * len(calls)

    first = AccuracyMemo(tmp_path / "m.sqlite")
    acc = first.wrap(measure, "val")
    a, b = _arch(0), _arch(1)
    assert a.key() != b.key()
    va, vb = acc(a), acc(b)
    assert acc(a) == va and (first.hits, first.misses) == (1, 2)
    first.close()
    second = AccuracyMemo(tmp_path / "m.sqlite")  # another job, later
    acc2 = second.wrap(measure, "val")
    assert acc2(b) == vb and acc2(a) == va and len(calls) == 2
    assert second.get(a, "test") is None  # the split is part of the key
    second.close()


def test_a_damaged_accuracy_memo_is_skipped(tmp_path: Path) -> None:
    from tinyflow.search.accuracy_memo import accuracy_memo
    from tinyflow.training.cache import evaluation_key

    ckpt = tmp_path / "supernet.ckpt"
    ckpt.write_bytes(b"weights")
    cfg = _cfg(f"cache.dir={tmp_path / 'cache'}")
    memo = accuracy_memo(cfg, ckpt)
    assert memo is not None
    memo.close()
    memo.path.write_bytes(b"this is not a database" * 100)
    assert accuracy_memo(cfg, ckpt) is None
    assert accuracy_memo(_cfg("cache.search=false"), ckpt) is None
    ckpt.write_bytes(b"other weights")  # other supernet bytes: another memo
    assert evaluation_key(cfg, ckpt) != memo.path.stem


@pytest.mark.slow
def test_a_later_sweep_job_looks_up_the_subnets_an_earlier_one_measured(run_cli, tmp_path: Path) -> None:
    first, second = (c["extra"]["search"] for c in _two_device_sweep(run_cli, tmp_path, "[space,train,search]"))
    asked = first["accuracy_memo_hits"] + first["accuracy_memo_misses"]  # a job may ask twice for one arch
    assert first["accuracy_memo_misses"] > first["accuracy_memo_hits"]
    assert second["accuracy_memo_misses"] == 0 and second["accuracy_memo_hits"] == asked
    assert second["supernet_val_accuracy"] == first["supernet_val_accuracy"]
