"""The deployed network: kinds, round trip, graph/model agreement, and what each scheduler deploys."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tinyflow.arch.zoo import mobilenetv2
from tinyflow.contracts import MemoryConfig, SchedulerBase
from tinyflow.errors import ConfigError
from tinyflow.ir.from_arch import from_arch
from tinyflow.network import DeployedNetwork, register_kind, registered_kinds


def _arch(resolution: int = 64):
    return mobilenetv2(0.35, resolution, num_classes=10)


def test_plain_network_is_static_and_its_graph_is_from_arch():
    arch = _arch()
    net = DeployedNetwork.plain(arch)
    assert net.kind == "static" and net.options == {} and net.to_arch() == arch
    g, want = net.graph(), from_arch(arch)
    assert [n.name for n in g] == [n.name for n in want] and g.macs() == want.macs()
    assert net.graph(batch=2)[g.inputs[0]].shape[0] == 2


def test_round_trip_through_json():
    from tinyflow_plugins.schedulers.rnnpool import RNNPoolScheduler

    net = RNNPoolScheduler(stem_channels=8).network(DeployedNetwork.plain(_arch()))
    back = DeployedNetwork.from_dict(json.loads(json.dumps(net.to_dict())))
    assert back == net and back.graph().macs() == net.graph().macs()
    with pytest.raises(ConfigError, match="kind, arch"):
        DeployedNetwork.from_dict({"kind": "static"})


def test_rnnpool_scheduler_rewrites_a_static_net_and_keeps_an_rnnpool_one():
    from tinyflow.arch.rnnpool import rewrite
    from tinyflow.ir.rnnpool import rnnpool_graph
    from tinyflow_plugins.schedulers.rnnpool import RNNPoolScheduler

    arch = _arch(96)
    sched = RNNPoolScheduler(stem_channels=8, hidden2=4)
    net = sched.network(DeployedNetwork.plain(arch))
    assert net.kind == "rnnpool" and net.to_arch() == arch
    assert net.options["stem_channels"] == 8 and isinstance(net.options["cut"], int)
    want = rnnpool_graph(rewrite(arch, {"stem_channels": 8, "hidden2": 4}))
    assert net.graph().macs() == want.macs() and net.graph().params() == want.params()
    assert RNNPoolScheduler(hidden2=16).network(net) is net  # an rnnpool net keeps its own options
    plan = sched.plan(net.graph(), MemoryConfig())
    assert plan.scheduler == "rnnpool" and plan.to_dict() == sched.plan(from_arch(arch), MemoryConfig()).to_dict()


def test_layer_and_patch_deploy_the_network_unchanged():
    from tinyflow_plugins.schedulers.layer import LayerScheduler
    from tinyflow_plugins.schedulers.patch import PatchScheduler

    net = DeployedNetwork.plain(_arch())
    for sched in (LayerScheduler(), PatchScheduler()):
        assert isinstance(sched, SchedulerBase) and sched.network(net) is net


def test_unknown_kind_names_the_registered_ones_and_a_plugin_can_register_one():
    net = DeployedNetwork("mystery", _arch().to_dict())
    with pytest.raises(ConfigError, match="not registered"):
        net.graph()
    register_kind("test-plain-twice", lambda n, batch: from_arch(n.to_arch(), batch), lambda n, dropout: None)
    assert "test-plain-twice" in registered_kinds()
    assert DeployedNetwork("test-plain-twice", _arch().to_dict()).graph().macs() == from_arch(_arch()).macs()


def test_models_match_their_graphs():
    from tinyflow_plugins.schedulers.rnnpool import RNNPoolScheduler

    plain = DeployedNetwork.plain(_arch())
    rnn = RNNPoolScheduler(stem_channels=8).network(plain)
    for net in (plain, rnn):
        model = net.build_model(dropout=0.1)
        assert type(model).__name__ == ("StaticNet" if net.kind == "static" else "RNNPoolNet")
        names = {k.rsplit(".", 1)[0] for k in model.state_dict()} | set(model.state_dict())
        refs = {ref for n in net.graph() for ref in (n.weights or {}).values()}
        assert refs and refs <= names  # every weight the IR refers to is a parameter (or module) of the model


def test_importing_the_module_does_not_import_torch():
    code = "import sys, tinyflow.network as n; n.DeployedNetwork.plain; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
