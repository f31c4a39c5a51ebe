"""RNNPool: the batched operator against an explicit per-patch loop, ONNX export, shapes, memory plans."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tinyflow.errors import ConfigError
from tinyflow.nn.rnnpool import RNNPool

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- slow, obviously-correct reference
def _sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _cell_step(cell, x: list[float], h: list[float]) -> list[float]:
    """One step of the cell written out scalar by scalar from the documented equations."""
    W = cell.W.detach().double().tolist()
    U = cell.U.detach().double().tolist()
    hs = cell.hidden_size
    if cell.cell == "fastgrnn":
        zeta, nu = _sig(float(cell.zeta)), _sig(float(cell.nu))
        new = []
        for k in range(hs):
            pre = sum(W[k][i] * x[i] for i in range(len(x))) + sum(U[k][j] * h[j] for j in range(hs))
            z = _sig(pre + float(cell.b_z[k]))
            cand = math.tanh(pre + float(cell.b_h[k]))
            new.append((zeta * (1 - z) + nu) * cand + z * h[k])
        return new
    bi, bh = cell.b_i.detach().double().tolist(), cell.b_h.detach().double().tolist()

    def lin(M, v, row):
        return sum(M[row][i] * v[i] for i in range(len(v)))

    new = []
    for k in range(hs):
        r = _sig(lin(W, x, k) + bi[k] + lin(U, h, k) + bh[k])
        z = _sig(lin(W, x, hs + k) + bi[hs + k] + lin(U, h, hs + k) + bh[hs + k])
        n = math.tanh(lin(W, x, 2 * hs + k) + bi[2 * hs + k] + r * (lin(U, h, 2 * hs + k) + bh[2 * hs + k]))
        new.append((1 - z) * n + z * h[k])
    return new


def _run(cell, seq: list[list[float]]) -> list[float]:
    h = [0.0] * cell.hidden_size
    for x in seq:
        h = _cell_step(cell, x, h)
    return h


def reference_rnnpool(op: RNNPool, x: torch.Tensor) -> torch.Tensor:
    """Per image, per output pixel, per row and column: explicit loops over a zero-padded map."""
    n, f, height, width = x.shape
    (r, c), (sr, sc), (pr, pc) = op.patch, op.stride, op.padding
    ho, wo = (height + 2 * pr - r) // sr + 1, (width + 2 * pc - c) // sc + 1
    out = torch.zeros(n, 4 * op.hidden2, ho, wo, dtype=torch.float64)
    xd = x.double()

    def pixel(b: int, i: int, j: int) -> list[float]:
        if 0 <= i < height and 0 <= j < width:
            return xd[b, :, i, j].tolist()
        return [0.0] * f

    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                top, left = oy * sr - pr, ox * sc - pc
                rows = [_run(op.rnn1, [pixel(b, top + i, left + j) for j in range(c)]) for i in range(r)]
                cols = [_run(op.rnn1, [pixel(b, top + i, left + j) for i in range(r)]) for j in range(c)]
                parts = [_run(op.rnn2, rows), _run(op.rnn2, rows[::-1]), _run(op.rnn2, cols), _run(op.rnn2, cols[::-1])]
                out[b, :, oy, ox] = torch.tensor([v for p in parts for v in p], dtype=torch.float64)
    return out


def _randomize(op: RNNPool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in op.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.6)


@pytest.mark.parametrize(
    ("cell", "patch", "stride", "padding", "size"),
    [
        ("fastgrnn", 4, 2, None, (9, 10)),
        ("gru", 3, 2, 1, (7, 7)),
        ("fastgrnn", (3, 4), (2, 3), (0, 1), (8, 9)),
        ("gru", (4, 2), (1, 2), 0, (6, 5)),
    ],
)
def test_matches_reference_loop(cell, patch, stride, padding, size):
    torch.manual_seed(0)
    op = RNNPool(3, hidden1=4, hidden2=3, patch=patch, stride=stride, padding=padding, cell=cell)
    _randomize(op, 1)
    x = torch.randn(2, 3, *size)
    got = op(x).double()
    want = reference_rnnpool(op, x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_vww_shape_mapping():
    op = RNNPool(8, hidden1=8, hidden2=8, patch=6, stride=4)
    assert op.padding == (1, 1)
    assert op.output_size(112, 112) == (28, 28)
    y = op(torch.randn(1, 8, 112, 112))
    assert tuple(y.shape) == (1, 32, 28, 28)


def test_bad_input_is_a_clear_error():
    op = RNNPool(8, 8, 8, patch=6, stride=4)
    with pytest.raises(ConfigError, match="expects"):
        op(torch.randn(1, 3, 16, 16))
    with pytest.raises(ConfigError, match="smaller than one"):
        op.output_size(3, 3)
    with pytest.raises(ConfigError, match="cell"):
        RNNPool(8, 8, 8, cell="lstm")


def test_gradients_reach_every_parameter():
    op = RNNPool(3, 4, 4, patch=4, stride=2)
    op(torch.randn(2, 3, 8, 8)).square().mean().backward()
    for name, p in op.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("cell", "dynamo"), [pytest.param("fastgrnn", True, marks=pytest.mark.slow), ("gru", False)])
def test_onnx_export_matches_pytorch(tmp_path, cell, dynamo):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    torch.manual_seed(0)
    op = RNNPool(8, hidden1=8, hidden2=8, patch=6, stride=4, cell=cell).eval()
    _randomize(op, 2)
    x = torch.randn(2, 8, 32, 32)
    path = tmp_path / "rnnpool.onnx"
    torch.onnx.export(op, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=dynamo, opset_version=18)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = {node.op_type for node in model.graph.node}
    assert not ops & {"GRU", "RNN", "LSTM", "Loop", "Scan"}, ops  # plain ops only
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y_ort = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        y = op(x).numpy()
    np.testing.assert_allclose(y_ort, y, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- IR op, network, plan
from tinyflow.arch import mobilenetv2  # noqa: E402
from tinyflow.arch.rnnpool import rewrite  # noqa: E402
from tinyflow.contracts import MemoryConfig  # noqa: E402
from tinyflow.ir import from_arch  # noqa: E402
from tinyflow.ir.rnnpool import rnnpool_graph  # noqa: E402
from tinyflow.memory import check_no_overlap, layer_plan  # noqa: E402
from tinyflow.memory.rnnpool_plan import rnnpool_plan  # noqa: E402
from tinyflow.nn.rnnpool_net import RNNPoolNet  # noqa: E402

VWW = {"stem_channels": 8, "hidden1": 8, "hidden2": 8, "patch": 6, "stride": 4}


def test_ir_macs_and_params_match_pytorch():
    from torch.utils.flop_counter import FlopCounterMode

    for cell in ("fastgrnn", "gru"):
        rarch = rewrite(mobilenetv2(0.35, 64, num_classes=10), {**VWW, "cell": cell})
        g = rnnpool_graph(rarch)
        node = g["rnnpool"]
        net = RNNPoolNet(rarch)
        assert sum(g.node_params(node)) == sum(p.numel() for p in net.rnnpool.parameters())
        x = net.stem(torch.randn(1, 3, 64, 64))
        with FlopCounterMode(display=False) as counter:
            y = net.rnnpool(x)
        assert tuple(y.shape) == node.shape
        assert g.node_macs(node) * 2 == counter.get_total_flops()  # matmul FLOPs = 2 x MACs


def test_rewrite_cuts_at_the_pooled_resolution():
    rarch = rewrite(mobilenetv2(1.0, 224), VWW)
    assert rarch.stem_hw == (112, 112) and rarch.pooled_hw == (28, 28)
    assert rarch.cut == 6 and rarch.blocks[0].in_channels == 32  # resumes at the 64-channel stage
    g = rnnpool_graph(rarch)
    assert g["rnnpool"].shape == (1, 32, 28, 28) and g["stem"].shape == (1, 8, 112, 112)
    with pytest.raises(ConfigError, match="cut"):
        rewrite(mobilenetv2(1.0, 224), {"cut": 40})
    with pytest.raises(ConfigError, match="smaller"):
        rewrite(mobilenetv2(1.0, 16), {"patch": 12, "stride": 12})
    with pytest.raises(ConfigError, match="unknown"):
        rewrite(mobilenetv2(1.0, 224), {"hidden": 8})


def test_patchwise_execution_equals_forward():
    torch.manual_seed(0)
    net = RNNPoolNet.from_arch(mobilenetv2(0.35, 40, num_classes=5), {**VWW, "patch": 5, "stride": 3})
    _randomize(net.rnnpool, 3)
    with torch.no_grad():  # non-trivial BN statistics so a wrong region or padding shows
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    net.eval()
    x = torch.randn(2, 3, 40, 40)
    assert torch.allclose(net.forward_patchwise(x), net(x), atol=1e-5)


@pytest.mark.parametrize("count_input", [True, False])
def test_plan_runs_patch_by_patch_and_passes_the_overlap_checker(count_input):
    memory = MemoryConfig(count_input=count_input)
    rarch = rewrite(mobilenetv2(0.35, 224, num_classes=2), VWW)
    g = rnnpool_graph(rarch)
    plan = rnnpool_plan(g, memory)
    check_no_overlap(plan.tensors)
    n = rarch.n_patches
    assert n == 28 * 28 and [s.patch for s in plan.steps[: 2 * n : 2]][-1] == (27, 27)
    names = {t.name for t in plan.tensors}
    assert "stem" not in names  # the full stem output never exists
    in_bytes = 224 * 224 * 3 if count_input else 0
    pooled, patch, scratch = 28 * 28 * 32, 6 * 6 * 8, (6 + 6) * 8 + 3 * 8
    for step in (0, n, 2 * n - 1):  # during the patch loop only these are alive
        live = {t.name: t.size for t in plan.tensors if t.first_step <= step <= t.last_step and t.size}
        expect = {"stem.patch": patch}
        if step > 0:
            expect |= {"rnnpool.scratch": scratch, "rnnpool": pooled}
        if step < 2 * n - 1:
            expect |= {"input": in_bytes} if count_input else {"input.patch": 13 * 13 * 3}
        assert live == expect, (step, live)
    layer = layer_plan(g, memory)
    assert plan.peak_live_bytes <= layer.peak_live_bytes
    loop_peak = max(s.working_set_bytes for s in plan.steps[: 2 * n])
    assert loop_peak == pooled + patch + scratch + (in_bytes if count_input else 13 * 13 * 3)
    assert loop_peak < max(s.working_set_bytes for s in layer.steps[:2])  # layer holds the 112x112x8 stem output
    assert plan.arena_bytes >= plan.peak_live_bytes
    assert plan.extra["recompute_macs"] > 0 and plan.macs == layer.macs + plan.extra["recompute_macs"]
    base = layer_plan(from_arch(mobilenetv2(0.35, 224, num_classes=2)), memory)
    assert plan.peak_live_bytes < base.peak_live_bytes / 3


# ---------------------------------------------------------------- plugin, config, training
def test_scheduler_plugin_from_hydra_config_rewrites_an_arch_graph():
    import yaml
    from hydra import compose, initialize_config_dir

    import tinyflow
    from tinyflow.plugins import build_plugin

    defaults = yaml.safe_load((tinyflow.CONF_DIR / "config.yaml").read_text())["defaults"]
    listed = any(isinstance(d, dict) and "scheduler" in d for d in defaults)
    select = "scheduler=rnnpool" if listed else "+scheduler=rnnpool"
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[select, "scheduler.stem_channels=8", "scheduler.hidden2=4"])
    sched = build_plugin(cfg, "scheduler")
    arch = mobilenetv2(0.35, 96, num_classes=10)
    plan = sched.plan(from_arch(arch), MemoryConfig())
    assert plan.scheduler == "rnnpool" and plan.extra["pooled_hw"] == [12, 12]
    check_no_overlap(plan.tensors)
    assert plan.to_dict()["steps"][0]["patch"] == [0, 0]
    with pytest.raises(ConfigError, match=r"rnnpool\.cell"):
        type(sched)(cell="lstm").plan(from_arch(arch), MemoryConfig())


@pytest.mark.slow
def test_trains_end_to_end_with_the_standalone_trainer(tmp_path):
    from dataclasses import replace

    from tinyflow.arch.zoo import MBV2_SETTINGS
    from tinyflow.network import DeployedNetwork
    from tinyflow.tracking import NullTracker
    from tinyflow_plugins.data import DigitsData
    from tinyflow_plugins.schedulers.rnnpool import RNNPoolScheduler
    from tinyflow_plugins.trainers.standalone import StandaloneTrainer

    arch = replace(mobilenetv2(0.35, 32, 10, 1, settings=MBV2_SETTINGS[:4]), head_channels=0)
    sched = RNNPoolScheduler(stem_channels=8, hidden1=8, hidden2=4, patch=4, stride=2)

    def builder(arch, dropout=0.0):  # type: ignore[no-untyped-def]
        return sched.network(DeployedNetwork.plain(arch)).build_model(dropout)

    recipe = {"epochs": 3, "lr": 0.1, "warmup_epochs": 0, "label_smoothing": 0.0, "save_checkpoints": False}
    trainer = StandaloneTrainer(arch=arch, model_builder=builder, seed=0, **recipe)
    result = trainer.fit(None, DigitsData(seed=0, batch_size=64), str(tmp_path), NullTracker())
    assert isinstance(trainer.model, RNNPoolNet)
    assert result.metrics["val_accuracy"] > 0.4  # chance is 0.1
    assert trainer.evaluate(arch, "test") > 0.4


def test_init_from_static_copies_the_kept_part():
    from tinyflow.nn.static import StaticNet

    arch = mobilenetv2(0.35, 64, num_classes=10)
    static = StaticNet(arch)
    net = RNNPoolNet.from_arch(arch, {"hidden2": 4})  # 16 channels: the first kept block keeps its shapes
    copied = net.init_from_static(static)
    assert (
        "stem.0.weight" in copied
        and "classifier.weight" in copied
        and f"blocks.{net.rnnpool_arch.cut}.expand.0.weight" in copied
    )
    assert not any(k.startswith("rnnpool") for k in copied)
    cut = net.rnnpool_arch.cut
    torch.testing.assert_close(net.blocks[str(cut + 2)].project[0].weight, static.blocks[cut + 2].project[0].weight)
    static_keys = set(static.state_dict())
    assert {k for k in net.state_dict() if not k.startswith("rnnpool.")} <= static_keys  # StaticNet's names
    vww = RNNPoolNet.from_arch(arch, VWW)  # stem of 8 and a 32-channel RNNPool: neither the stem nor block 0 fit
    copied = vww.init_from_static(static)
    assert "stem.0.weight" not in copied and "blocks.6.expand.0.weight" not in copied and "head.0.weight" in copied


def test_ir_names_bind_to_rnnpoolnet_weights():
    rarch = rewrite(mobilenetv2(0.35, 64, num_classes=10), VWW)
    keys = set(RNNPoolNet(rarch).state_dict())
    g = rnnpool_graph(rarch)
    refs = [name for node in g for name in node.weights.values()]
    assert refs and all(r in keys or any(k.startswith(r + ".") for k in keys) for r in refs)
    assert g["blocks.6.expand"].block == 7 and "blocks.0.expand" not in g.nodes


@pytest.mark.slow
def test_analyze_app_with_scheduler_rnnpool(run_cli, tmp_path, store_uri):
    import json

    from mlflow.tracking import MlflowClient

    args = ("network.width_mult=0.35", "network.resolution=224", "scheduler=rnnpool", "scheduler.stem_channels=8")
    res = run_cli(*args, "output=json", module="tinyflow.analyze")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    # by hand: the 224x224x3 input, the 28x28x32 pooled output, one 6x6x8 stem patch, (6+6)*8 + 3*8 scratch
    assert data["peak_live_bytes"] == 224 * 224 * 3 + 28 * 28 * 32 + 6 * 6 * 8 + 120
    assert data["layer_peak_live_bytes"] == 112 * 112 * (8 + 48)  # MobileNetV2 w0.35: block 1's expand
    assert data["scheduler"] == "rnnpool" and data["cut"] == 6 and data["rnnpool_patches"] == 784
    assert data["per_layer"][1]["name"] == "rnnpool" and data["per_layer"][1]["per_patch"]
    client = MlflowClient(tracking_uri=store_uri)
    run = client.search_runs([client.get_experiment_by_name("tinyflow").experiment_id], "tags.stage = 'analyze'")[0]
    assert run.data.metrics["peak_live_bytes"] == data["peak_live_bytes"]
    assert {"memory_profile.png", "analysis.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.slow
def test_rnnpoolnet_exports_with_the_deploy_helper(tmp_path):
    """The whole network through the backend's exporter (dynamic batch) and its onnxruntime check."""
    from tinyflow.deploy.onnx_export import check_onnx_against_torch, export_onnx

    torch.manual_seed(0)
    net = RNNPoolNet.from_arch(mobilenetv2(0.35, 48, num_classes=10, in_channels=1), VWW).eval()
    _randomize(net.rnnpool, 4)
    path = export_onnx(net, (1, 1, 48, 48), tmp_path / "net.onnx")
    check = check_onnx_against_torch(net, path, (1, 1, 48, 48), n_inputs=7, tolerance=1e-4)
    assert check["onnx_max_abs_diff"] <= 1e-4
