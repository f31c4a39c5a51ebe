"""The RNNPool stem of the elastic supernet (`trainer.stem=rnnpool`): extraction equals the active supernet, the
genome pins the dropped stages, the checkpoint keeps the stem, the search costs the supernet's own rewrite, and the
whole pipeline trains, searches, fine-tunes, plans and deploys the RNNPool network."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from conftest import run_small_pipeline
from tiny_spaces import small_space, tiny_space
from tinyflow.arch.rnnpool import supernet_stem
from tinyflow.arch.space import MBConvSpace
from tinyflow.errors import CheckpointError, ConfigError
from tinyflow.nn.elastic import ElasticSupernet, space_from_dict, space_to_dict
from tinyflow.nn.rnnpool_net import RNNPoolNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scrambled(net: ElasticSupernet, seed: int) -> ElasticSupernet:
    """Kernel transforms, BatchNorm affine parameters and statistics, and the RNNs away from their init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "transforms" in name or p.ndim <= 1:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.3 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return net


# options -> (cut stage, pinned stages). The largest arch: block 0, stages 1-3 at blocks 1-4, 5-8, 9-12, tail 13.
# auto with a 4x4 / stride 2 RNNPool (6x6 out) resumes at stage 2; cut 0 keeps everything; cut 13 only the tail.
OPTION_SETS = [
    ({"patch": 4, "stride": 2, "hidden1": 4, "hidden2": 5}, 2, 1),
    ({"cut": 0, "hidden2": 3}, 0, 0),
    ({"cut": 1, "patch": 4, "stride": 2, "stem_channels": 8, "cell": "gru"}, 1, 0),
    ({"cut": 13, "hidden2": 6}, 4, 3),
]


@pytest.mark.parametrize(("options", "cut_stage", "pinned"), OPTION_SETS)
def test_extract_equals_the_active_supernet(options, cut_stage, pinned):
    space = small_space()
    torch.manual_seed(0)
    net = scrambled(ElasticSupernet(space, stem="rnnpool", rnnpool=options), seed=1)
    net.sort_channels()
    net.eval()
    stem = net.rnnpool_stem
    assert stem.cut_stage == cut_stage and net.space.fixed_stages == pinned
    x = torch.randn(3, 1, 24, 24)
    rng = random.Random(0)
    for arch in [net.max_arch(), net.min_arch()] + [net.sample(rng) for _ in range(5)]:
        net.set_active(arch)
        want = net(x)
        static = net.extract(arch).eval()
        assert isinstance(static, RNNPoolNet)
        rarch = static.rnnpool_arch
        assert rarch.cut == stem.options.cut and rarch.blocks[0].in_channels == 4 * stem.options.hidden2
        assert rarch.blocks == (rarch.blocks[0], *arch.blocks[rarch.cut + 1 :])
        assert (static(x) - want).abs().max().item() <= 1e-5
        assert static.rnnpool.rnn1.W.data_ptr() != net.rnnpool.rnn1.W.data_ptr()  # a copy, not shared


def test_sampled_archs_pin_the_dropped_stages_and_the_supernet_ignores_them():
    space = small_space()
    torch.manual_seed(0)
    net = scrambled(ElasticSupernet(space, stem="rnnpool", rnnpool={"patch": 4, "stride": 2}), seed=2).eval()
    cut = net.rnnpool_stem.options.cut
    assert cut == 5  # block 0 + stage 1 pinned at depth 4
    rng = random.Random(1)
    archs = [net.sample(rng) for _ in range(8)]
    assert len({a.blocks[cut:] for a in archs}) > 1  # the kept part is elastic
    assert {a.blocks[:cut] for a in archs} == {net.max_arch().blocks[:cut]}  # the dropped part is pinned
    for a in archs:
        assert (
            a.genome["depths"][0] == 4 and set(a.genome["kernels"][:4]) == {7} and set(a.genome["expands"][:4]) == {6}
        )
    # an arch of the un-pinned space with other blocks before the cut runs the same network (they are cut off)
    x = torch.randn(2, 1, 24, 24)
    g = archs[0].genome
    other = space.build([2, *g["depths"][1:]], [3] * 4 + g["kernels"][4:], [3] * 4 + g["expands"][4:])
    assert other.blocks[:cut] != archs[0].blocks[:cut]
    net.set_active(archs[0])
    want = net(x)
    net.set_active(other)
    torch.testing.assert_close(net(x), want, rtol=0, atol=0)
    extracted = net.extract(other).eval()
    assert extracted.rnnpool_arch.cut == 3  # its own index of the same first kept block
    assert (extracted(x) - want).abs().max().item() <= 1e-5


def test_stem_errors_name_the_fields():
    space = small_space()
    with pytest.raises(ConfigError, match=r"rnnpool\.cut=2 falls inside stage 1 .*e\.g\. 1 or 5"):
        ElasticSupernet(space, stem="rnnpool", rnnpool={"cut": 2})
    with pytest.raises(ConfigError, match=r"trainer\.stem"):
        ElasticSupernet(space, stem="pool")
    with pytest.raises(ConfigError, match="patch"):
        ElasticSupernet(small_space(resolution=8), stem="rnnpool", rnnpool={"patch": 8, "stride": 8})


def test_stem_config_and_space_rebuild_the_same_supernet():
    space = small_space()
    torch.manual_seed(0)
    net = scrambled(ElasticSupernet(space, stem="rnnpool", rnnpool={"patch": 4, "stride": 2, "hidden2": 5}), 3)
    cfg = json.loads(json.dumps(net.stem_config))  # JSON-ready, as the checkpoint stores it
    again = ElasticSupernet(space_from_dict(space_to_dict(net.space)), **cfg)
    again.load_state_dict(net.state_dict())  # strict: the same modules
    assert again.stem_config == cfg and again.space == net.space
    assert supernet_stem(net.space, cfg["rnnpool"]).space == net.space  # pinning is idempotent
    x = torch.randn(2, 1, 24, 24)
    arch = net.sample(random.Random(4))
    for m in (net, again):
        m.eval().set_active(arch)
    torch.testing.assert_close(again(x), net(x))
    assert ElasticSupernet(space).stem_config == {"stem": "conv"}


# ------------------------------------------------------------------------------------------------ trainer
@pytest.fixture(scope="module")
def data():
    from tinyflow_plugins.data import DigitsData

    d = DigitsData(batch_size=32, eval_batch_size=100, max_train_samples=160, max_eval_samples=100, seed=0)
    d.setup()
    return d


def ofa_trainer(**kw):
    from tinyflow_plugins.trainers.ofa import OfaTrainer

    phases = [
        {"name": "full", "epochs": 1, "lr": 0.05, "kernel": [5], "depth": [2], "expand": [3]},
        {"name": "shrink", "epochs": 1, "lr": 0.02, "random_subnets": 1, "sort_channels": True},
    ]
    opts = dict(phases=phases, progress=False, recalib_batches=2, seed=0, limit_train_batches=2)
    opts.update(kw)
    return OfaTrainer(**opts)


STEM = {"patch": 4, "stride": 2, "hidden1": 4, "hidden2": 4}


def test_checkpoint_round_trip_keeps_the_stem(tmp_path, data):
    from tinyflow.network import DeployedNetwork
    from tinyflow.supernet import Supernet
    from tinyflow.supernet.checkpoint import CKPT_KEY, load_supernet, read_checkpoint
    from tinyflow.tracking import NullTracker
    from tinyflow.training.evaluation import evaluate_accuracy
    from tinyflow_plugins.schedulers.rnnpool import RNNPoolScheduler

    space = tiny_space()
    t = ofa_trainer(stem="rnnpool", stem_options=RNNPoolScheduler(**STEM))
    assert t.training_space(space).fixed_stages == 1  # what the space stage scores cells on
    result = t.fit(space, data, str(tmp_path), NullTracker())
    meta = read_checkpoint(result.checkpoint)[CKPT_KEY]
    assert meta["stem"] == t.module.supernet.stem_config and meta["stem"]["rnnpool"]["cut"] == 3
    assert meta["space"]["fixed_stages"] == 1
    # core's loader rebuilds the same supernet
    loaded = load_supernet(result.checkpoint)
    assert loaded.stem_config == meta["stem"]
    for k, v in t.module.supernet.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, msg=k)
    # the search / finetune path: the checkpoint's RNNPool stem, whatever trainer.stem says now
    supernet = Supernet.load(result.checkpoint, data)
    assert supernet.stem == meta["stem"]
    arch = supernet.space.sample(random.Random(0))
    net = supernet.extract(arch)
    assert isinstance(net, RNNPoolNet) and net.rnnpool_arch.cut == 3
    assert evaluate_accuracy(net, data.val_dataloader()) == pytest.approx(supernet.evaluate(arch), abs=1e-9)
    # its network is the rnnpool one it runs, with the stem's resolved options; built, it has the same parameters
    deployed = supernet.network(arch)
    assert deployed == DeployedNetwork("rnnpool", arch.to_dict(), net.rnnpool_arch.options())
    assert deployed.options == meta["stem"]["rnnpool"]
    assert deployed.build_model().state_dict().keys() == net.state_dict().keys()
    # resuming under another stem is refused
    with pytest.raises(CheckpointError, match="stem"):
        ofa_trainer(resume=True).fit(space, data, str(tmp_path), NullTracker())


def test_trainer_stem_options_come_from_the_rnnpool_scheduler():
    from tinyflow_plugins.schedulers.layer import LayerScheduler
    from tinyflow_plugins.trainers.ofa import stem_config

    node = {"_target_": "tinyflow_plugins.schedulers.rnnpool.RNNPoolScheduler", "hidden2": 4, "cut": 3}
    assert stem_config("rnnpool", node)["rnnpool"]["hidden2"] == 4
    assert stem_config("conv", node) == {"stem": "conv"}
    for bad in (None, LayerScheduler()):
        with pytest.raises(ConfigError, match="scheduler=rnnpool"):
            stem_config("rnnpool", bad)


def test_search_costs_the_supernet_stem_with_its_own_options():
    from hydra import compose, initialize_config_dir

    import tinyflow
    from tinyflow.plugins import build_device
    from tinyflow.search.strategy import SearchSettings
    from tinyflow.stages.search import make_costs
    from tinyflow.supernet import Supernet

    def cfg(*overrides):
        with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=["debug=fast", *overrides])

    space = tiny_space()
    net = ElasticSupernet(space, stem="rnnpool", rnnpool=STEM)
    network_of = Supernet(net, data=None).network
    arch = net.sample(random.Random(0))
    settings = SearchSettings()
    c = cfg("scheduler=rnnpool", "scheduler.hidden2=16", "scheduler.patch=6")  # not what the supernet trained
    costs, name = make_costs(c, settings, build_device(c), network_of, arch)
    assert name == "rnnpool"
    from tinyflow.ir.rnnpool import rnnpool_graph
    from tinyflow.memory.rnnpool_plan import rnnpool_plan
    from tinyflow.plugins import build_memory

    want = rnnpool_plan(rnnpool_graph(net.rnnpool_stem.rewrite(arch)), build_memory(c))
    assert costs.plan(arch, {}).peak_live_bytes == want.peak_live_bytes
    c = cfg()  # scheduler=layer cannot cost an RNNPool supernet's subnets
    with pytest.raises(ConfigError, match="scheduler=rnnpool"):
        make_costs(c, settings, build_device(c), network_of, arch)


def test_train_cache_key_follows_the_stem_options_only_for_an_rnnpool_stem():
    """`trainer.stem_options` is the scheduler node only while the stem needs it: a conv-stem training is shared by
    every scheduler, an RNNPool-stem one is keyed by the scheduler's options."""
    from hydra import compose, initialize_config_dir

    import tinyflow
    from tinyflow.training.cache import train_key

    def key(*overrides):
        with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
            return train_key(compose(config_name="config", overrides=["debug=fast", *overrides]), 0.5, 32)

    assert key("scheduler=layer") == key("scheduler=patch") == key("scheduler=rnnpool")
    stem = ("trainer.stem=rnnpool", "scheduler=rnnpool")
    assert key(*stem) != key(*stem, "scheduler.hidden2=4") != key("scheduler=rnnpool")


# ------------------------------------------------------------------------------------------------ pipeline
@pytest.mark.slow
def test_rnnpool_stem_pipeline_end_to_end(run_cli, tmp_path: Path) -> None:
    run, ctx, report = run_small_pipeline(run_cli, tmp_path, "trainer.stem=rnnpool", "scheduler=rnnpool")

    from tinyflow.arch.genome import Arch
    from tinyflow.supernet.checkpoint import CKPT_KEY, read_checkpoint
    from tinyflow.training.checkpoint import load_static_model

    stem = read_checkpoint(ctx["supernet_checkpoint"])[CKPT_KEY]["stem"]
    assert stem["stem"] == "rnnpool" and ctx["extra"]["search"]["supernet_stem"] == "rnnpool"
    # the deployed model is the supernet's RNNPool network, rewritten once with the supernet's options
    model, arch, _ = load_static_model(run / "model.pt")
    assert isinstance(model, RNNPoolNet) and arch == Arch.from_dict(ctx["arch"])
    options = model.rnnpool_arch.options()
    assert options == stem["rnnpool"]
    assert report["scheduler"] == ctx["plan"]["scheduler"] == "rnnpool"
    assert ctx["network"] == {"kind": "rnnpool", "arch": ctx["network"]["arch"], "options": options}
    assert ctx["plan"]["applied_schedule_options"] == {}  # the options are the network's, not the scheduler's
    assert "finetune_test_accuracy_before" in ctx["metrics"]  # started from the supernet's weights
    # above chance (0.1 on 10 classes; 200 test images): 8 supernet steps and 2 fine-tuning steps of training
    assert report["accuracy_float"] > 0.2 and report["accuracy_int8"] > 0.2


def test_space_stage_scores_cells_on_the_pinned_space():
    from hydra import compose, initialize_config_dir

    import tinyflow
    from tinyflow.stages.space import training_space as pin_supernet_stem

    def cfg(*overrides):
        with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=["debug=fast", *overrides])

    space = MBConvSpace()
    assert pin_supernet_stem(cfg("scheduler=rnnpool"), space) is space  # conv stem: nothing pinned
    pinned = pin_supernet_stem(cfg("trainer.stem=rnnpool", "scheduler=rnnpool"), space)
    assert pinned.fixed_stages == supernet_stem(space, {}).space.fixed_stages > 0
    cut = supernet_stem(space, {}).options.cut

    def blocks_before_cut(sp) -> set:
        rng = random.Random(0)
        return {tuple(sp.sample(rng).blocks[:cut]) for _ in range(20)}

    assert len(blocks_before_cut(pinned)) == 1  # every arch scored has the blocks the supernet trains
    assert len(blocks_before_cut(space)) > 1  # unpinned, they vary
    with pytest.raises(ConfigError, match="scheduler=rnnpool"):
        pin_supernet_stem(cfg("trainer.stem=rnnpool"), space)
