"""`tinyflow.supernet.Supernet` from a checkpoint alone: space, stem and recalibration settings as recorded, scores
equal to the extracted networks', the network it deploys (plain or RNNPool), clear errors; the shared LR schedule
and parameter groups the `ofa` trainer uses; `TrainResult`."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from tiny_spaces import tiny_space
from tinyflow.contracts import TrainResult
from tinyflow.errors import CheckpointError
from tinyflow.network import DeployedNetwork
from tinyflow.nn.elastic import ElasticSupernet, space_to_dict
from tinyflow.nn.rnnpool_net import RNNPoolNet
from tinyflow.nn.static import StaticNet
from tinyflow.supernet import Supernet
from tinyflow.supernet.checkpoint import CKPT_KEY
from tinyflow.training.evaluation import evaluate_accuracy
from tinyflow.training.optim import cosine_lr, cosine_schedule, param_groups

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEM = {"patch": 4, "stride": 2, "hidden1": 4, "hidden2": 4}


@pytest.fixture(scope="module")
def data():
    from tinyflow_plugins.data import DigitsData

    d = DigitsData(batch_size=32, eval_batch_size=100, max_train_samples=96, max_eval_samples=100, seed=0)
    d.setup()
    return d


def write(path: Path, stem: dict | None = None, evaluation: dict | None = None) -> tuple[Path, ElasticSupernet]:
    """A supernet checkpoint as a supernet trainer writes it: weights under `supernet.`, space, stem, settings."""
    torch.manual_seed(0)
    net = ElasticSupernet(tiny_space(), **(stem or {}))
    meta = {"space": space_to_dict(net.space), "stem": net.stem_config, "dropout": 0.0}
    if evaluation is not None:
        meta["evaluation"] = evaluation
    torch.save({"state_dict": {f"supernet.{k}": v for k, v in net.state_dict().items()}, CKPT_KEY: meta}, path)
    return path, net


def test_load_evaluate_extract_network(tmp_path, data):
    path, net = write(tmp_path / "s.ckpt", evaluation={"recalib_batches": 2, "seed": 5})
    supernet = Supernet.load(path, data)
    assert supernet.stem == {"stem": "conv"} and supernet.space.max_arch() == net.space.max_arch()
    assert (supernet.evaluator.recalib_batches, supernet.evaluator.seed) == (2, 5)  # as recorded
    assert Supernet.load(path, data, recalib_batches=1).evaluator.recalib_batches == 1  # or as asked
    for arch in (supernet.space.max_arch(), supernet.space.sample(random.Random(3))):
        acc = supernet.evaluate(arch)
        assert supernet.evaluate(arch) == acc  # cached
        extracted = supernet.extract(arch)
        assert isinstance(extracted, StaticNet) and not extracted.training
        assert evaluate_accuracy(extracted, data.val_dataloader()) == pytest.approx(acc, abs=1e-9)
        assert supernet.network(arch) == DeployedNetwork.plain(arch)


def test_rnnpool_stem_network_is_what_extract_gives(tmp_path, data):
    path, _ = write(tmp_path / "r.ckpt", stem={"stem": "rnnpool", "rnnpool": STEM})
    supernet = Supernet.load(path, data)  # no evaluation entry: the defaults
    assert supernet.stem["stem"] == "rnnpool" and supernet.evaluator.recalib_batches == 4
    arch = supernet.space.sample(random.Random(1))
    net = supernet.network(arch)
    extracted = supernet.extract(arch)
    assert isinstance(extracted, RNNPoolNet)
    assert net.kind == "rnnpool" and net.options == extracted.rnnpool_arch.options() == supernet.stem["rnnpool"]
    built = net.build_model()
    built.load_state_dict(extracted.state_dict())  # strict: the network description builds the same modules
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(built.eval()(x), extracted(x))


def test_load_errors_name_the_file(tmp_path, data):
    with pytest.raises(CheckpointError, match="does not exist"):
        Supernet.load(tmp_path / "missing.ckpt", data)
    foreign = tmp_path / "model.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a tinyflow supernet checkpoint"):
        Supernet.load(foreign, data)


def test_cosine_lr_is_the_schedule_of_both_trainers():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    schedule = cosine_schedule(opt, total_steps=10, warmup_steps=3, min_lr_ratio=0.1)
    for step in range(10):
        assert opt.param_groups[0]["lr"] == pytest.approx(cosine_lr(0.2, step, 10, 3, 0.1), rel=1e-12)
        opt.step()
        schedule.step()
    assert cosine_lr(1.0, 0, 10, 3) == 0.25 and cosine_lr(1.0, 3, 10, 3) == 1.0 and cosine_lr(1.0, 10, 10, 3) == 0.0


def test_param_groups_leave_named_parameters_undecayed():
    net = ElasticSupernet(tiny_space())
    decay, no_decay = param_groups(net, 1e-3, no_decay_names=("transforms",))
    names = {id(p): n for n, p in net.named_parameters()}
    assert not any("transforms" in names[id(p)] for p in decay["params"])
    assert any("transforms" in names[id(p)] for p in no_decay["params"])
    assert all(p.ndim > 1 for p in decay["params"]) and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))


def test_train_result_kinds_and_round_trip():
    result = TrainResult("model", "m.pt", {"val_accuracy": 0.5}, 2.0, {"kind": "static", "arch": {}, "options": {}})
    assert TrainResult.from_dict(result.to_dict()) == result
    with pytest.raises(ValueError, match="supernet"):
        TrainResult("weights", "x")


def test_a_subnet_is_scored_on_a_prefix_of_the_val_split(tmp_path, data):
    """`max_images`: the first n images of the split, the same ones the whole split's pass scores first."""
    path, _ = write(tmp_path / "s.ckpt", evaluation={"recalib_batches": 2, "seed": 5})
    supernet = Supernet.load(path, data)
    arch = supernet.space.sample(random.Random(4))
    hits = supernet.evaluator.correct(arch, "val")
    assert hits.dtype == torch.bool and len(hits) == len(data.split("val"))
    for n in (1, 7, len(hits) // 2, len(hits)):
        assert supernet.evaluate(arch, "val", n) == pytest.approx(int(hits[:n].sum()) / n, abs=1e-12)
    assert supernet.evaluate(arch, "val") == pytest.approx(int(hits.sum()) / len(hits), abs=1e-12)


def test_subnets_measured_by_two_worker_processes_score_as_one_by_one(tmp_path, data, caplog):
    """The search's predictor pairs spread over forked workers: the same accuracies, in order, cached as evaluate
    caches them, and the progress told once per subnet."""
    from tinyflow.search.parallel_eval import measure_many

    path, _ = write(tmp_path / "s.ckpt", evaluation={"recalib_batches": 2, "seed": 5})
    rng = random.Random(11)
    archs = [Supernet.load(path, data).space.sample(rng) for _ in range(6)]
    one_by_one = [Supernet.load(path, data).evaluate(a, "val", 40) for a in archs]
    supernet = Supernet.load(path, data)
    supernet.evaluate(archs[2], "val", 40)  # one already measured: not measured again
    ticks: list[int] = []
    with caplog.at_level("INFO", logger="tinyflow.search.parallel_eval"):
        spread = measure_many(supernet, archs, "val", 40, workers=2, progress=ticks.append)
    assert "5 subnets measured by 2 worker processes" in caplog.text
    assert spread == pytest.approx(one_by_one, abs=1e-12)
    assert sum(ticks) == len(archs)
    assert all(supernet.is_evaluated(a, "val", 40) for a in archs)


@pytest.mark.parametrize(
    ("stem", "path_bytes"),
    [(None, None), ({"stem": "rnnpool", "rnnpool": STEM}, None), (None, 1), (None, 0)],
    ids=["conv", "rnnpool", "path-cache-one-block", "path-cache-off"],
)
def test_the_shared_layers_run_once_per_resolution_and_give_the_same_numbers(
    tmp_path, data, stem, path_bytes, monkeypatch
):
    """A loaded supernet caches its stem's (and RNNPool's, first block's) outputs and the elastic blocks a subnet
    shares with the last one (all of them, only the first when the byte budget is tiny, none at 0): every subnet's
    hits, and the BatchNorm statistics it leaves, equal those of a full recalibration and pass — the same numbers."""
    from tinyflow.supernet.evaluation import SubnetEvaluator

    path, _ = write(tmp_path / "s.ckpt", stem=stem, evaluation={"recalib_batches": 2, "seed": 5})
    supernet = Supernet.load(path, data)
    if path_bytes is not None:
        supernet.evaluator.path_cache_bytes = path_bytes
    net = supernet.net
    full = SubnetEvaluator(net, data, 2, 5)  # no cache: every layer per subnet
    assert supernet.evaluator.cache_prefix and not full.cache_prefix
    x = full.eval_batches("val", net.space.resolution)[0][0]
    rng = random.Random(8)
    archs = [net.space.max_arch(), net.space.min_arch()] + [net.space.sample(rng) for _ in range(3)]
    archs += [*_sharing_their_start(net, archs[-1]), archs[-1]]  # the path cache: partial and whole hits
    supernet.evaluator.prepare("val", net.space.resolution)
    calls = []
    monkeypatch.setattr(net, "prefix", lambda t: calls.append(1) or type(net).prefix(net, t))
    for arch in archs:
        cached = supernet.evaluator.correct(arch, "val")
        with torch.no_grad():
            cached_logits = net.eval()(x)
        again = full.correct(arch, "val")
        with torch.no_grad():
            full_logits = net.eval()(x)
        assert torch.equal(cached, again)
        assert torch.equal(cached_logits, full_logits)  # the statistics each left behind, to the bit
        if path_bytes is not None:
            assert len(supernet.evaluator._path) == min(path_bytes, 1)
    r = net.space.resolution
    n_batches = len(full.calibration_batches(r)) + len(full.eval_batches("val", r))
    # the cached evaluator never ran the prefix itself; the full one and the logits above did
    assert len(calls) == len(archs) * (n_batches + 2)


def _sharing_their_start(net: ElasticSupernet, arch) -> list:
    """Two subnets that run `arch`'s first elastic blocks and then differ: the last active block's kernel changed,
    and the last stage one block shallower (or deeper)."""
    space = net.space
    g = net.genome_of(arch)
    last = len(g["depths"]) - 1
    slot = last * net.max_depth + g["depths"][last] - 1
    kernels = list(g["kernels"])
    kernels[slot] = next(k for k in space.kernel_choices if k != kernels[slot])
    depths = list(g["depths"])
    depths[last] = next(d for d in sorted(space.depth_choices, reverse=True) if d != depths[last])
    return [space.build(g["depths"], kernels, g["expands"]), space.build(depths, g["kernels"], g["expands"])]


def test_subnets_sharing_their_first_blocks_run_them_once(tmp_path, data, monkeypatch):
    """The evaluator's path cache: a subnet runs only the elastic blocks after the start it shares with the last
    subnet measured; the accuracies equal an evaluator without the cache."""
    from tinyflow.supernet.evaluation import SubnetEvaluator

    path, _ = write(tmp_path / "s.ckpt", evaluation={"recalib_batches": 2, "seed": 5})
    supernet = Supernet.load(path, data)
    net = supernet.net
    base = net.space.sample(random.Random(3))
    archs = [base, *_sharing_their_start(net, base), base]
    r = net.space.resolution
    runs: dict[int, int] = {}
    for s, slots in enumerate(net.stages):
        for j, block in enumerate(slots):
            slot = s * net.max_depth + j
            original = block.forward
            monkeypatch.setattr(
                block, "forward", lambda x, slot=slot, f=original: runs.__setitem__(slot, runs.get(slot, 0) + 1) or f(x)
            )
    batches = len(supernet.evaluator.calibration_batches(r)) + len(supernet.evaluator.eval_batches("val", r))
    cached = [supernet.evaluator.accuracy(a, "val") for a in archs]
    assert runs[0] == batches  # stage 1's first block ran for the first subnet only
    assert sum(runs.values()) > len(net.path_of(base)) * batches  # the later blocks that differ ran again
    before = dict(runs)
    assert supernet.evaluator.accuracy(base, "val") == cached[0]
    assert runs == before  # the same subnet again: no elastic block runs
    runs.clear()
    full = SubnetEvaluator(net, data, 2, 5)
    assert [full.accuracy(a, "val") for a in archs] == cached
    assert runs[0] == len(archs) * batches
