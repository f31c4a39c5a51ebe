"""Network IR: shapes, MACs, params, blocks, validation errors — built from arch genomes (no torch)."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from tinyflow.arch import MBConvSpace, mobilenetv2
from tinyflow.arch.zoo import MBV2_RD_KERNELS, mbv2_rd
from tinyflow.ir import Graph, IRError, OpKind, from_arch, register_op


def test_mobilenetv2_shapes_macs_params() -> None:
    g = from_arch(mobilenetv2())
    assert g["stem"].shape == (1, 32, 112, 112)
    assert g["blocks.1.expand"].shape == (1, 96, 112, 112)
    assert g["blocks.3.project"].shape == (1, 32, 28, 28)
    assert g["classifier"].shape == (1, 1000)
    # torchvision reports 300.77 M MACs (REFERENCE: ~300.8 M); params here count folded-BN biases
    assert g.macs() == 300_774_272
    assert g.params() == 3_487_816
    g.validate()


def test_width_multiplier_rounds_channels_like_torchvision() -> None:
    g = from_arch(mobilenetv2(0.35, 144))
    assert g["stem"].shape == (1, 16, 72, 72)  # 32 * 0.35 = 11.2 -> 16 (never below 8, never -10 %)
    assert g["blocks.0.project"].shape[1] == 8
    assert g["head"].shape[1] == 1280  # head keeps 1280 for w < 1


def test_blocks_and_weight_names() -> None:
    a = mobilenetv2()
    g = from_arch(a)
    assert g["stem"].block == 0
    assert g["blocks.0.depthwise"].block == 1
    assert g["blocks.1.expand"].block == 2
    assert g["blocks.16.project"].block == 17
    assert {g[n].block for n in ("head", "pool", "flatten", "classifier")} == {18}
    assert g.n_blocks == len(a.blocks) + 1
    assert g["blocks.3.expand"].weights == {"weight": "blocks.3.expand.0.weight", "bn": "blocks.3.expand.1"}
    assert g["classifier"].weights["bias"] == "classifier.bias"
    # residual blocks get an add reading the block input
    assert g["blocks.2.add"].inputs == ("blocks.1.project", "blocks.2.project")


def test_weight_names_match_staticnet_state_dict() -> None:
    torch = pytest.importorskip("torch")
    from tinyflow.nn.static import StaticNet

    a = mobilenetv2(0.35, 64, num_classes=10)
    keys = set(StaticNet(a).state_dict())
    for node in from_arch(a):
        for role, name in node.weights.items():
            assert (f"{name}.weight" if role == "bn" else name) in keys, (node.name, role, name)
    del torch


def test_mbv2_rd_kernels() -> None:
    a = mbv2_rd()
    assert [b.kernel for b in a.blocks] == list(MBV2_RD_KERNELS)
    assert from_arch(a)["blocks.0.depthwise"].attrs["kernel"] == (1, 1)


def test_shape_mismatch_names_the_node() -> None:
    g = Graph("t")
    g.add("x", "input", (), {"shape": (1, 8, 16, 16)})
    g.add("y", "input", (), {"shape": (1, 4, 16, 16)})
    with pytest.raises(IRError, match=r"node 'bad'.*do not broadcast"):
        g.add("bad", "add", ("x", "y"))
    with pytest.raises(IRError, match=r"node 'c'.*expects 3 input channels"):
        g.add("c", "conv2d", ("x",), {"out_channels": 4, "in_channels": 3, "kernel": (3, 3)})
    with pytest.raises(IRError, match=r"node 'k'.*does not fit"):
        g.add("k", "conv2d", ("x",), {"out_channels": 4, "kernel": (17, 17)})
    with pytest.raises(IRError, match=r"input 'nope' is not defined"):
        g.add("d", "act", ("nope",), {"fn": "relu"})
    with pytest.raises(IRError, match=r"unknown op kind 'lstm'"):
        g.add("e", "lstm", ("x",))
    with pytest.raises(IRError, match=r"node 'g'.*groups=3"):
        g.add("g", "conv2d", ("x",), {"out_channels": 6, "kernel": (1, 1), "groups": 3})


def test_validate_catches_a_corrupted_shape() -> None:
    g = from_arch(mobilenetv2(0.35, 96))
    g["blocks.2.depthwise"].shape = (1, 48, 24, 23)
    with pytest.raises(IRError, match=r"node 'blocks.2.depthwise'"):
        g.validate()


def test_topological_order_sorts_and_detects_cycles() -> None:
    g = from_arch(mobilenetv2(0.35, 64))
    order = [n.name for n in g.topological_order()]
    pos = {n: i for i, n in enumerate(order)}
    for node in g:
        assert all(pos[i] < pos[node.name] for i in node.inputs)
    g["stem"].inputs = ("classifier",)
    with pytest.raises(IRError, match=r"cycle"):
        g.topological_order()


def test_custom_op_kind_is_costed() -> None:
    @register_op
    class Halve(OpKind):
        name = "test_halve"

        def shape(self, node, inputs):  # type: ignore[no-untyped-def]
            n, c, h, w = inputs[0]
            return (n, c * 2, h // 2, w // 2)

        def macs(self, node, inputs, out):  # type: ignore[no-untyped-def]
            return 7 * out[1]

        def params(self, node, inputs):  # type: ignore[no-untyped-def]
            return 3, 1

    g = Graph("custom")
    g.add("x", "input", (), {"shape": (1, 4, 8, 8)})
    node = g.add("h", "test_halve", ("x",))
    assert node.shape == (1, 8, 4, 4)
    assert g.macs() == 56 and g.params() == 4


def test_ir_never_imports_torch() -> None:
    code = (
        "import sys, random\n"
        "from tinyflow.arch import MBConvSpace\n"
        "from tinyflow.ir import from_arch\n"
        "from tinyflow.memory import layer_plan\n"
        "from tinyflow.cost import arch_cost, analytic_report\n"
        "from tinyflow.contracts import MemoryConfig\n"
        "a = MBConvSpace().sample(random.Random(0))\n"
        "layer_plan(from_arch(a), MemoryConfig()); arch_cost(a)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_random_mcunet_archs_validate() -> None:
    rng = random.Random(3)
    for _ in range(20):
        space = MBConvSpace(width_mult=rng.choice([0.35, 0.5, 1.0]), resolution=rng.choice([64, 97, 144, 160]))
        g = from_arch(space.sample(rng))
        g.validate()
        assert g.outputs == ["classifier"]
