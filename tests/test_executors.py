"""Executors: layer and patch execution of the same weights agree (float32, max abs diff <= 1e-5)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyflow.arch import MBConvSpace, StageSpec, mobilenetv2
from tinyflow.arch.zoo import mbv2_rd
from tinyflow.contracts import MemoryConfig
from tinyflow.errors import ConfigError
from tinyflow.execute import from_static, max_abs_diff
from tinyflow.ir import from_arch
from tinyflow.memory.receptive_field import graph_patch_geometry, max_patch_blocks
from tinyflow.nn.static import StaticNet
from tinyflow_plugins.schedulers.patch import PatchScheduler

TOL = 1e-5
torch.set_num_threads(1)


def _randomize(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics (so folding matters), eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
    return net.eval()


def _net(arch, seed: int = 0) -> StaticNet:
    torch.manual_seed(seed)
    return _randomize(StaticNet(arch), seed)


@pytest.fixture(scope="module")
def mbv2_exec():
    net = _net(mobilenetv2())
    return net, from_static(net)


def test_layer_execution_is_the_static_net(mbv2_exec):
    net, ex = mbv2_exec
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = net(x), ex.run_layer(x)
    assert ref.shape == got.shape == (2, 1000)
    assert max_abs_diff(ref, got) < 1e-4 * max(1.0, float(ref.abs().max()))  # BN folded: rounding differs


def test_mbv2_patch_equals_layer(mbv2_exec):
    _, ex = mbv2_exec
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = ex.run_layer(x)
        b = ex.run_patch(x, patch_blocks=5, n_patches=4)
    assert max_abs_diff(a, b) <= TOL


def test_mbv2_rd_patch_equals_layer():
    ex = from_static(_net(mbv2_rd(0.35, 97)))
    x = torch.randn(1, 3, 97, 97, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert max_abs_diff(ex.run_layer(x), ex.run_patch(x, 5, 3)) <= TOL


def test_run_plan_follows_the_scheduler(mbv2_exec):
    _, ex = mbv2_exec
    plan = PatchScheduler(4, 5).plan(ex.graph, MemoryConfig())
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert max_abs_diff(ex.run_plan(plan, x), ex.run_layer(x)) <= TOL
    # the executor runs the same geometry the plan was costed with, step for step
    geo = graph_patch_geometry(ex.graph, 5, 4)
    patch_steps = [(s.patch, s.node, tuple(s.extra["region"])) for s in plan.steps if s.patch is not None]
    expected = [
        ((p.row, p.col), op.output, p.tensors[op.output].as_tuple())
        for p in geo.patches
        for op in geo.ops
        if op.output in p.tensors
    ]
    assert patch_steps == expected


def test_patch_stage_output_is_assembled_exactly(mbv2_exec):
    """The assembled stage output equals the layer-wise tensor (not only the logits)."""
    _, ex = mbv2_exec
    geo = graph_patch_geometry(ex.graph, 5, 4)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        stage = ex._run_patch_stage(x, geo)
        t = {"input": x}
        for node in ex.order:
            t[node.name] = ex._run_node(node, [t[i] for i in node.inputs], _pads(node))
            if node.name == geo.stage_output:
                break
    assert max_abs_diff(stage, t[geo.stage_output]) <= TOL


def _pads(node):
    from tinyflow.execute.kernels import node_padding

    return node_padding(node) if node.op in ("conv2d", "maxpool", "avgpool") else (0, 0, 0, 0)


@st.composite
def small_cases(draw):
    strides = [draw(st.sampled_from([1, 2])) for _ in range(3)]
    space = MBConvSpace(
        width_mult=draw(st.sampled_from([0.25, 0.35, 0.5])),
        resolution=draw(st.integers(17, 61).filter(lambda r: r % 2 == 1)),
        num_classes=10,
        stages=tuple(StageSpec(w, s) for w, s in zip((24, 40, 80), strides)),
        tail_channels=(),
        head_channels=draw(st.sampled_from([0, 64])),
        expand_choices=(1, 3, 6),
        depth_choices=(1, 2),
    )
    rng_seed = draw(st.integers(0, 2**16))
    import random

    arch = space.sample(random.Random(rng_seed))
    arch = dataclasses.replace(
        arch, stem_stride=draw(st.sampled_from([1, 2])), stem_kernel=draw(st.sampled_from([3, 5]))
    )
    graph = from_arch(arch)
    pb = draw(st.integers(1, max_patch_blocks(graph)))
    out_hw = graph_patch_geometry(graph, pb, 1).ops[-1].out_hw
    n = draw(st.integers(1, min(min(out_hw), 5)))
    batch = draw(st.sampled_from([1, 2]))
    return arch, graph, pb, n, batch, rng_seed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_cases())
def test_patch_equals_layer_on_random_archs(case):
    arch, graph, pb, n, batch, seed = case
    ex = from_static(_net(arch, seed), graph)
    r = arch.resolution
    x = torch.randn(batch, 3, r, r, generator=torch.Generator().manual_seed(seed)) * 2
    with torch.no_grad():
        a = ex.run_layer(x)
        b = ex.run_patch(x, pb, n)
    assert max_abs_diff(a, b) <= TOL, (arch, pb, n)


def test_executor_errors(mbv2_exec):
    _, ex = mbv2_exec
    x = torch.zeros(1, 3, 224, 224)
    with pytest.raises(ConfigError, match=r"scheduler\.n_patches = 29"):
        ex.run_patch(x, 5, 29)
    with pytest.raises(ConfigError, match=r"scheduler\.patch_blocks = 19"):
        ex.run_patch(x, 19, 2)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    from tinyflow.deploy.onnx_export import export_onnx

    net = _net(mobilenetv2(0.35, 97), seed=7)
    path = export_onnx(net, (1, 3, 97, 97), tmp_path_factory.mktemp("onnx") / "mbv2.onnx")
    return net, path


def test_onnx_weights_layer_and_patch(onnx_model):
    """An executor on the ONNX file's own initializers: equals onnxruntime, and patch == layer."""
    from tinyflow.deploy.onnx_export import run_onnx, session
    from tinyflow.execute import from_onnx

    _, path = onnx_model
    ex = from_onnx(path)
    assert ex.graph.meta["onnx_path"] == str(path)
    x = torch.randn(2, 3, 97, 97, generator=torch.Generator().manual_seed(8))
    ref = torch.from_numpy(run_onnx(session(path), x.numpy()))
    with torch.no_grad():
        a = ex.run_layer(x)
        b = ex.run_patch(x, 5, 4)
        c = ex.run_patch(x, 9, 3)
    assert max_abs_diff(a, ref) < 1e-4 * max(1.0, float(ref.abs().max()))
    assert max_abs_diff(a, b) <= TOL and max_abs_diff(a, c) <= TOL


def test_onnx_and_arch_give_the_same_patch_plan(onnx_model):
    from tinyflow.ir import from_onnx

    net, path = onnx_model
    a = PatchScheduler(4, 5).plan(from_arch(net.arch), MemoryConfig())
    b = PatchScheduler(4, 5).plan(from_onnx(path), MemoryConfig())
    keys = ("n_patches", "patch_blocks", "input_patch_hw", "patch_stage_macs", "patch_stage_macs_layerwise")
    assert {k: a.extra[k] for k in keys} == {k: b.extra[k] for k in keys}
    assert (a.peak_live_bytes, a.arena_bytes, a.macs) == (b.peak_live_bytes, b.arena_bytes, b.macs)


@pytest.mark.slow
def test_int8_qdq_onnx_patch_equals_layer(onnx_model, tmp_path):
    """A QDQ int8 model: dequantized weights, activations clamped to their quantization ranges (the quantizer
    drops the ReLU6s that the ranges imply); close to onnxruntime's int8 result, and patch == layer."""
    import numpy as np

    from tinyflow.deploy.onnx_export import run_onnx, session
    from tinyflow.deploy.quantize import quantize_int8
    from tinyflow.execute import from_onnx

    _, path = onnx_model
    calib = np.random.default_rng(0).standard_normal((4, 3, 97, 97)).astype(np.float32)
    q = quantize_int8(path, tmp_path / "int8.onnx", calib)
    ex = from_onnx(q)
    assert ex.clamps  # the activation ranges were found
    x = torch.randn(1, 3, 97, 97, generator=torch.Generator().manual_seed(9))
    ref = torch.from_numpy(run_onnx(session(q), x.numpy()))
    with torch.no_grad():
        a, b = ex.run_layer(x), ex.run_patch(x, 5, 4)
    assert max_abs_diff(a, b) <= TOL
    # onnxruntime also rounds every activation to int8: close, not equal
    assert max_abs_diff(a, ref) < 0.02 * float(ref.abs().max())


def _generic_graph(r: int, include_pad: bool):
    """Pooling, concat, stand-alone BN, clip/hardswish, asymmetric padding and dilation: ONNX-style ops."""
    from tinyflow.ir.graph import Graph

    g = Graph("generic")
    g.add("x", "input", (), {"shape": (1, 3, r, r)}, block=0)

    def conv(name, src, cin, cout, k, s=1, pads=None, groups=1, act=None, dil=1, block=0, params=None):
        p = k // 2 * dil
        attrs = {
            "out_channels": cout,
            "kernel": (k, k),
            "stride": (s, s),
            "padding": pads or (p, p, p, p),
            "groups": groups,
            "dilation": (dil, dil),
            "act": act,
            "act_params": params,
        }
        g.add(name, "conv2d", (src,), attrs, block, {"weight": f"{name}.w", "bias": f"{name}.b"})

    conv("c1", "x", 3, 8, 3, act="relu")
    g.add("mp", "maxpool", ("c1",), {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1, 1, 1)}, block=1)
    conv("c2", "mp", 8, 8, 3, groups=8, act="clip", params={"min": -1.0, "max": 1.0}, block=1)
    pool = {"kernel": (3, 3), "stride": (1, 1), "padding": (1, 1, 1, 1), "count_include_pad": include_pad}
    g.add("ap", "avgpool", ("mp",), pool, block=1)
    g.add(
        "bn",
        "batchnorm",
        ("ap",),
        {"eps": 1e-3},
        1,
        {k: f"bn.{k}" for k in ("bn_scale", "bn_bias", "bn_mean", "bn_var")},
    )
    g.add("cat", "concat", ("c2", "bn"), {"axis": 1}, block=1)
    conv("c3", "cat", 16, 8, 1, act="hardswish", block=1)
    g.add("add", "add", ("c3", "c2"), {}, block=1)
    g.add("act", "act", ("add",), {"fn": "sigmoid"}, block=1)
    conv("c4", "act", 8, 4, 5, s=2, pads=(1, 2, 2, 1), block=2)
    conv("c5", "c4", 4, 4, 3, dil=2, act="relu6", block=3)
    g.add("gap", "global_avgpool", ("c5",), {}, block=4)
    g.add("flat", "flatten", ("gap",), {"axis": 1}, block=4)
    g.add("fc", "linear", ("flat",), {"out_features": 5, "act": None}, 4, {"weight": "fc.w", "bias": "fc.b"})
    g.set_outputs(["fc"])
    gen = torch.Generator().manual_seed(r)
    tensors = {}
    for n in g:
        for role, name in n.weights.items():
            if n.op == "conv2d":
                a = n.attrs
                shape = (a["out_channels"], g[n.inputs[0]].shape[1] // a["groups"], *a["kernel"])
                tensors[name] = torch.randn(shape if role == "weight" else shape[:1], generator=gen) * 0.5
            elif n.op == "linear":
                tensors[name] = torch.randn((5, 4) if role == "weight" else (5,), generator=gen)
            else:
                tensors[name] = torch.rand(8, generator=gen) + (0.5 if role == "bn_var" else 0.0)
    return g, tensors


@settings(max_examples=12, deadline=None)
@given(r=st.integers(13, 41), include_pad=st.booleans(), data=st.data())
def test_generic_ops_patch_equals_layer(r, include_pad, data):
    from tinyflow.execute import bind

    g, tensors = _generic_graph(r, include_pad)
    ex = bind(g, tensors)
    pb = data.draw(st.integers(1, max_patch_blocks(g)), label="patch_blocks")
    out_hw = graph_patch_geometry(g, pb, 1).ops[-1].out_hw
    n = data.draw(st.integers(1, min(min(out_hw), 4)), label="n_patches")
    x = torch.randn(2, 3, r, r, generator=torch.Generator().manual_seed(r)) * 3
    with torch.no_grad():
        assert max_abs_diff(ex.run_layer(x), ex.run_patch(x, pb, n)) <= TOL


@pytest.mark.parametrize("include_pad", [False, True])
def test_pooling_kernels_match_torch(include_pad):
    import torch.nn.functional as F

    from tinyflow.execute.kernels import node_padding, run_valid

    g, _ = _generic_graph(15, include_pad)
    x = torch.randn(1, 8, 15, 15, generator=torch.Generator().manual_seed(0))
    ap = run_valid(g["ap"], [x], None, node_padding(g["ap"]))
    mp = run_valid(g["mp"], [x], None, node_padding(g["mp"]))
    assert max_abs_diff(ap, F.avg_pool2d(x, 3, 1, 1, count_include_pad=include_pad)) <= 1e-6
    assert max_abs_diff(mp, F.max_pool2d(x, 3, 2, 1)) == 0.0


def test_run_plan_of_a_fallback_plan_runs_layers():
    from tinyflow.arch import Arch, Block

    arch = Arch(16, (Block(8, 8, 3, 1, 1, 0), Block(8, 16, 3, 3, 1, 1)), stem_channels=8, head_channels=1280)
    ex = from_static(_net(arch, 3))
    plan = PatchScheduler("auto", "auto").plan(ex.graph, MemoryConfig())
    assert not plan.extra.get("n_patches")  # the scheduler chose the layer plan (no grid)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert max_abs_diff(ex.run_plan(plan, x), ex.run_layer(x)) == 0.0
