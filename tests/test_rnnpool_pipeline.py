"""`python -m tinyflow scheduler=rnnpool`: the whole default pipeline trains, exports, plans and deploys the
RNNPool network, and the report's memory comes from the rnnpool plan of the network's description (the ONNX
importer does not read the ops RNNPool exports to)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import run_small_pipeline


def test_model_pt_rebuilds_the_rnnpool_network(tmp_path: Path) -> None:
    """model.pt records the rewrite: both loaders (training's and the deploy stages') rebuild the same RNNPoolNet."""
    from tinyflow.arch import mobilenetv2
    from tinyflow.context import RunContext
    from tinyflow.deploy.model import load_final_model
    from tinyflow.nn.rnnpool_net import RNNPoolNet
    from tinyflow.nn.static import StaticNet
    from tinyflow.training.checkpoint import load_static_model, save_static_model

    torch.manual_seed(0)
    arch = mobilenetv2(0.35, 64, num_classes=10, in_channels=1)
    net = RNNPoolNet.from_arch(arch, {"stem_channels": 8, "hidden1": 4, "hidden2": 6}).eval()
    path = save_static_model(tmp_path / "model.pt", net, arch)
    x = torch.randn(2, 1, 64, 64)
    loaded, loaded_arch, _ = load_static_model(path)
    ctx = RunContext(output_dir=str(tmp_path), model_checkpoint=str(path), arch=arch.to_dict())
    final_arch, final = load_final_model(ctx, "quantize")
    for model in (loaded, final):
        assert isinstance(model, RNNPoolNet)
        assert model.rnnpool_arch == net.rnnpool_arch
        torch.testing.assert_close(model(x), net(x))
    assert loaded_arch == final_arch == arch
    static = StaticNet(arch)  # a plain static network still loads as one
    assert type(load_static_model(save_static_model(tmp_path / "s.pt", static, arch))[0]) is StaticNet


@pytest.mark.slow
def test_rnnpool_pipeline_end_to_end(run_cli, tmp_path: Path) -> None:
    run, ctx, report = run_small_pipeline(run_cli, tmp_path, "scheduler=rnnpool")

    from tinyflow.arch.genome import Arch
    from tinyflow.contracts import MemoryConfig
    from tinyflow.deploy.quantize import int8_flash_bytes
    from tinyflow.ir import from_arch
    from tinyflow.ir.rnnpool import rnnpool_graph
    from tinyflow.memory.layer_plan import layer_plan
    from tinyflow.memory.rnnpool_plan import rnnpool_plan
    from tinyflow.nn.rnnpool_net import RNNPoolNet
    from tinyflow.training.checkpoint import load_static_model

    # the model every later stage used is the RNNPool network, rebuilt from model.pt
    model, arch, _ = load_static_model(run / "model.pt")
    assert isinstance(model, RNNPoolNet)
    assert arch == Arch.from_dict(ctx["arch"])

    # the report's peak is the rnnpool plan of that network's IR, recomputed here independently
    plan = ctx["plan"]
    memory = MemoryConfig(**plan["memory"])
    expected = rnnpool_plan(rnnpool_graph(model.rnnpool_arch), memory)
    layer = layer_plan(from_arch(arch), memory)
    assert plan["scheduler"] == report["scheduler"] == "rnnpool"
    assert plan["source"].startswith("network description") and report["memory_source"] == plan["source"]
    assert plan["deployed_network"]["kind"] == "rnnpool"
    assert report["peak_sram_bytes"] == plan["peak_live_bytes"] == expected.peak_live_bytes
    assert report["arena_bytes"] == plan["arena_bytes"] == expected.arena_bytes
    assert expected.peak_live_bytes < layer.peak_live_bytes  # not the un-rewritten network's layer figure

    # flash: the int8 file's own initializers, labelled; the exported float ONNX matches PyTorch
    counted = int8_flash_bytes(run / "model_int8.onnx")["flash_bytes"]
    assert report["flash_bytes"] == counted == plan["flash_bytes"]
    assert plan["flash_source"] == "int8 ONNX initializers"
    assert report["onnx_max_abs_diff"] < 1e-3
    assert 0.0 <= report["accuracy_int8"] <= 1.0
