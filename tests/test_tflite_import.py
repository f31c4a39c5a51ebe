"""Real microcontroller models in: TFLite and tf2onnx ONNX import, TF Lite Micro's memory convention, patch plans.

The models (tests/data/models, third-party, Apache-2.0, see its README) carry TF Lite Micro's arena measured with
the `tflite-micro` wheel: head 55,296 / 16,000 / 768 B (person_detect / kws_ref_model / ad01_int8).
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from tinyflow.errors import TinyflowError
from tinyflow.ir import from_onnx, from_tflite, import_model
from tinyflow.ir.model_errors import ModelImportError, UnsupportedOpError
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan
from tinyflow.memory.patch_plan import patch_plan

MODELS = Path(__file__).resolve().parent / "data" / "models"
#: TF Lite Micro's measured arena head (non-persistent bytes), from the models' README
TFLM_HEAD = {"person_detect": 55_296, "kws_ref_model": 16_000, "ad01_int8": 768}
TFLM = MemoryConfig(
    inplace_depthwise=False,
    inplace_elementwise=False,
    arena_algorithm="tflm_greedy",
    alignment=16,
    persistent="tflm",
    flash="file",
    fold_pads=False,
    convention="tflm",
)


def signature(graph) -> list[tuple]:  # type: ignore[no-untyped-def]
    """What two imports of one model must agree on: per node op, shape, block, element size and attributes."""
    keys = ("out_channels", "kernel", "stride", "padding", "groups", "act", "out_features", "fn", "axis", "shape")
    out = []
    for n in graph.topological_order():
        attrs = tuple((k, n.attrs[k]) for k in keys if k in n.attrs)
        out.append((n.op, tuple(n.shape), n.block, n.elem_bytes, attrs))
    return out


@pytest.mark.parametrize("name", sorted(TFLM_HEAD))
def test_tflite_and_onnx_import_to_the_same_ir(name: str) -> None:
    g_t = from_tflite(MODELS / f"{name}.tflite")
    g_o = from_onnx(MODELS / f"{name}.onnx")
    assert signature(g_t) == signature(g_o)
    assert g_t.macs() == g_o.macs() and g_t.params() == g_o.params()
    assert import_model(MODELS / f"{name}.tflite").name == name  # by suffix


@pytest.mark.parametrize("name", sorted(TFLM_HEAD))
def test_tflm_convention_gives_tflm_head_and_file_flash(name: str) -> None:
    from tinyflow.analyze.conventions import apply_memory_convention

    g = from_tflite(MODELS / f"{name}.tflite")
    plan = layer_plan(g, TFLM)
    assert plan.arena_bytes == TFLM_HEAD[name]
    default = layer_plan(g, MemoryConfig())
    assert default.peak_live_bytes == TFLM_HEAD[name]  # the layer-by-layer bound, TinyEngine's convention
    analysis = {"flash_bytes": 0, "arena_bytes": plan.arena_bytes}
    apply_memory_convention(analysis, g, TFLM)
    assert analysis["flash_bytes"] == (MODELS / f"{name}.tflite").stat().st_size
    assert analysis["arena_total_bytes"] == plan.arena_bytes + analysis["persistent_bytes"] > plan.arena_bytes


def test_tflm_greedy_order_reproduces_a_fragmented_arena() -> None:
    """Keras' MobileNetV1 (α 0.25, 96×96×3): TF Lite Micro's planner leaves a gap — its measured head is 73,728 B,
    above the 55,296 B bound; `tflm_greedy` places equal sizes in its order and lands on the same bytes, while
    TinyEngine's convention reaches the bound. ResNet-8 (residual adds): 49,152 B both."""
    mbv1 = from_tflite(MODELS / "mobilenet_v1_025_96.tflite")
    assert layer_plan(mbv1, TFLM).arena_bytes == 73_728
    assert layer_plan(mbv1, MemoryConfig()).arena_bytes == 55_296
    resnet = from_tflite(MODELS / "resnet8_32.tflite")
    assert layer_plan(resnet, TFLM).arena_bytes == 49_152


def test_explicit_pads_are_tensors_under_tflm() -> None:
    """PAD ops a conv reads (padding 2, and 0/3 before a stride-2 depthwise: not SAME, so the converter keeps them)
    fold into the convs, from .tflite and from .onnx alike; TF Lite Micro runs them and holds the padded maps — its
    measured head is 40,400 B, which memory=tflm reproduces, against 26,688 B with the pads folded."""
    g = from_tflite(MODELS / "pads.tflite")
    assert signature(g) == signature(from_onnx(MODELS / "pads.onnx"))
    assert [n.attrs.get("explicit_pad") for n in g if n.op == "conv2d"] == [None, (2, 2, 2, 2), (0, 0, 3, 3)]
    tflm = layer_plan(g, TFLM)
    assert tflm.arena_bytes == 40_400 and [s.op for s in tflm.steps].count("pad") == 2
    assert layer_plan(g, MemoryConfig()).peak_live_bytes == 26_688


def test_logistic_fuses_as_onnx_sigmoid_and_se_pool_is_no_tail() -> None:
    """A squeeze-excite (pool → 1×1 conv → LOGISTIC → MUL) and a sigmoid head: TFLite's stand-alone LOGISTIC fuses
    into the conv / linear it follows as the ONNX importer fuses tf2onnx's Sigmoid, so the IRs agree; the SE's global
    pool is not a cut (the map it scales stays alive), so the tail starts at the final pool."""
    g = from_tflite(MODELS / "sigmoid_se.tflite")
    assert signature(g) == signature(from_onnx(MODELS / "sigmoid_se.onnx"))
    assert [n.attrs.get("act") for n in g if n.op in ("conv2d", "linear")] == ["relu", "sigmoid", "sigmoid"]
    pools = [n for n in g if n.op == "global_avgpool"]
    assert pools[0].block < pools[1].block == g.n_blocks


def test_resnet8_from_tf2onnx_transpose_input_and_blocks() -> None:
    """tf2onnx puts a Transpose at the input of a 3-channel NHWC model: it folds into the IR's input, and the
    ResNet's blocks come from its residual adds (stem, three residual blocks, the tail)."""
    g_t = from_tflite(MODELS / "resnet8_32.tflite")
    g_o = from_onnx(MODELS / "resnet8_32.onnx")
    assert signature(g_t) == signature(g_o) and g_o.meta["input_layout"] == "NHWC"
    assert not any(n.op == "transpose" for n in g_o)
    adds = [n for n in g_t if n.op == "add"]
    assert [a.block for a in adds] == [1, 2, 3] and all(a.attrs.get("act") == "relu" for a in adds)
    assert g_t.n_blocks == 4 and {n.op for n in g_t if n.block == 4} == {"global_avgpool", "reshape", "linear", "act"}


def test_tflm_tail_estimate_follows_the_host_layout() -> None:
    """With the host's 8-byte pointers the struct-based estimate lands within 5 % of the tail the tflite-micro
    wheel measured (README: 29,968 / 8,272 / 3,216 B); a 32-bit MCU's is smaller."""
    from tinyflow.memory.runtime_tail import tflm_tail_bytes

    measured = {"person_detect": 29_968, "kws_ref_model": 8_272, "ad01_int8": 3_216}
    for name, tail in measured.items():
        g = from_tflite(MODELS / f"{name}.tflite")
        host, mcu = tflm_tail_bytes(g, pointer_bytes=8)["total"], tflm_tail_bytes(g)["total"]
        assert abs(host - tail) <= 0.05 * tail and mcu < host


def test_nhwc_layout_and_quantization_kept() -> None:
    g = from_tflite(MODELS / "person_detect.tflite")
    inp = g[g.inputs[0]]
    assert inp.shape == (1, 1, 96, 96) and g.meta["input_layout"] == "NHWC" and inp.elem_bytes == 1
    acts = {k: v for k, v in g.quant.items() if k in g.nodes}
    assert set(acts) == set(g.nodes) and all(v.per_tensor and v.dtype == "int8" for v in acts.values())
    stem_w = g.constants[next(n for n in g if n.op == "conv2d").weights["weight"]]
    assert stem_w.dtype == np.int8 and stem_w.shape == (8, 1, 3, 3)  # OHWI in the file, OIHW in the IR
    stem = next(n for n in g if n.op == "conv2d")
    assert stem.attrs["padding"] == (0, 0, 1, 1) and stem.attrs["stride"] == (2, 2)  # TF's SAME, odd pixel last
    # weights keep per-channel scales: flash counts one 4-byte scale per output channel of a per-channel conv,
    # one per tensor of a per-tensor FC (ad01), never a scale per channel it does not have
    ad01 = from_tflite(MODELS / "ad01_int8.tflite")
    from tinyflow.ir.tflite_file import read_tflite

    m = read_tflite(MODELS / "ad01_int8.tflite")
    consts = [m.tensors[i] for i in ad01.meta["weights"].values()]
    assert all(len(t.scale) == 1 for t in consts)
    weights = [t for t in consts if t.type_name == "int8"]  # int32 biases: their scale is derived, not stored
    assert len(weights) == 10
    assert ad01.meta["weights_flash_bytes"] == sum(t.data.nbytes for t in consts) + 4 * len(weights)
    from tinyflow.cost import model_flash_bytes

    assert ad01.meta["weights_flash_bytes"] < model_flash_bytes(ad01)  # the IR's count charges per channel


def test_structural_blocks_on_mobilenet_v1_and_ds_cnn() -> None:
    """No `blocks.<i>` names: a depthwise + pointwise pair is a block, the stem block 0, the pool and classifier
    the tail; block boundaries are single-tensor cuts, so any block prefix can be a patch stage."""
    g = from_tflite(MODELS / "person_detect.tflite")
    convs = [n for n in g if n.op == "conv2d"]
    assert convs[0].block == 0 and [n.block for n in convs[1:27]] == [i // 2 + 1 for i in range(26)]
    assert g.n_blocks == 14 and {n.op for n in g if n.block == 14} == {"avgpool", "conv2d", "reshape", "act"}
    kws = from_tflite(MODELS / "kws_ref_model.tflite")
    assert [n.block for n in kws if n.op == "conv2d"] == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    from tinyflow.memory.receptive_field import max_patch_blocks

    assert max_patch_blocks(g) == 14


@pytest.mark.parametrize(
    ("name", "patch_blocks", "n_patches"),
    [("person_detect", 5, 3), ("person_detect", 5, 6), ("resnet8_32", 3, 3), ("mobilenet_v1_025_96", 5, 6)],
)
def test_patch_plans_on_vision_models_execute_equal(name: str, patch_blocks: int, n_patches: int) -> None:
    """MCUNetV2 on imported models (a block prefix found from structure): a patch plan with a lower peak, run in
    PyTorch from the imported int8 weights (dequantized), gives exactly the layer execution's output. person_detect
    5 blocks on 3×3 is what `n_patches=auto` picks for 32 KB, 6×6 its lowest peak (23,832 B)."""
    import torch

    from tinyflow.execute import from_tflite as executor

    path = MODELS / f"{name}.tflite"
    g = from_tflite(path)
    layer = layer_plan(g, MemoryConfig())
    plan = patch_plan(g, MemoryConfig(), patch_blocks=patch_blocks, n_patches=n_patches)
    assert plan.peak_live_bytes < layer.peak_live_bytes and plan.extra["extra_macs_ratio"] < 0.5
    ex = executor(path, g)
    torch.manual_seed(0)
    x = torch.rand(2, *g[g.inputs[0]].shape[1:]) * 2 - 1
    y_layer, y_patch = ex.run_layer(x), ex.run_plan(plan, x)
    # equal up to float32 summation order: oneDNN may block a region's conv differently from the whole map's
    # (with one intra-op thread, mobilenet_v1_025_96 differs in the last bit), so not bit for bit
    torch.testing.assert_close(y_patch, y_layer, rtol=1e-5, atol=1e-6)
    assert torch.allclose(y_layer.sum(dim=1), torch.ones(2))  # the softmax ran


@pytest.mark.slow
def test_analyze_cli_patch_auto_on_person_detect(run_cli) -> None:  # type: ignore[no-untyped-def]
    """`scheduler=patch scheduler.n_patches=auto` on person_detect, where the layer plan does not fit 32 KB."""
    import json

    res = run_cli(
        "network=tflite",
        f"network.path={MODELS / 'person_detect.tflite'}",
        "scheduler=patch",
        "scheduler.n_patches=auto",
        "device=custom",
        "device.sram_kb=32",
        "device.flash_kb=1024",
        "output=json",
        "plot=false",
        module="tinyflow.analyze",
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["layer_peak_live_bytes"] == 55_296
    assert data["peak_live_bytes"] < 32 * 1024 < data["layer_peak_live_bytes"] and data["patch_blocks"] >= 1
    assert 0 < data["extra_macs_ratio"] <= 0.5  # the default max_extra_macs


def test_schedule_stage_reads_a_tflite_file() -> None:
    """The pipeline's one function from description to IR imports a `.tflite` by its suffix."""
    from tinyflow.arch import mobilenetv2
    from tinyflow.network import DeployedNetwork
    from tinyflow.stages.schedule import deployed_graph

    net = DeployedNetwork.plain(mobilenetv2(0.35, 64, num_classes=10))
    graph, source = deployed_graph(net, str(MODELS / "kws_ref_model.tflite"))
    assert source.startswith("int8") and graph.meta["tflite_path"].endswith("kws_ref_model.tflite")
    assert graph.quant and graph.constants  # the importer's quantization and integers, for every backend


def test_memory_presets_compose() -> None:
    from hydra import compose, initialize_config_dir

    from tinyflow.plugins import build_memory

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base=None):
        default = build_memory(compose("analyze"))
        tflm = build_memory(compose("analyze", ["memory=tflm", "memory.alignment=4"]))
    assert default == MemoryConfig()  # the tinyengine preset is today's default
    assert tflm.convention == "tflm" and tflm.alignment == 4 and not tflm.inplace_depthwise
    with pytest.raises(TinyflowError, match=r"memory\.alignment"):
        MemoryConfig(alignment=12)


def test_patch_error_never_contradicts_itself() -> None:
    """A network whose stem cannot run patch by patch (ad01: all fully connected) says so, naming the node, instead
    of offering 'patch_blocks between 1 and 0'."""
    g = from_tflite(MODELS / "ad01_int8.tflite")
    with pytest.raises(TinyflowError, match=r"no block of the network 'ad01_int8' can run patch by patch") as err:
        patch_plan(g, MemoryConfig(), patch_blocks=2, n_patches=2)
    assert "between 1 and 0" not in str(err.value)


# ---------------------------------------------------------------- bad input: one clear paragraph each
def test_truncated_tflite(tmp_path: Path) -> None:
    bad = tmp_path / "cut.tflite"
    bad.write_bytes((MODELS / "kws_ref_model.tflite").read_bytes()[:20_000])
    with pytest.raises(ModelImportError, match=r"cut.tflite' is truncated or corrupt") as err:
        from_tflite(bad)
    assert "\n" not in str(err.value)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelImportError, match="not a TFLite flatbuffer"):
        from_tflite(junk)


def _with_builtin(src: Path, dst: Path, operator: int, code: int) -> Path:
    """A copy of `src` whose `operator`'s opcode says builtin `code` (both the int8 and the int32 field)."""
    import tflite

    buf = bytearray(src.read_bytes())
    model = tflite.Model.GetRootAs(bytes(buf), 0)
    tab = model.OperatorCodes(model.Subgraphs(0).Operators(operator).OpcodeIndex())._tab
    if (o := tab.Offset(4)) != 0:
        buf[tab.Pos + o] = code
    if (o := tab.Offset(10)) != 0:
        struct.pack_into("<i", buf, tab.Pos + o, code)
    dst.write_bytes(bytes(buf))
    return dst


def test_unsupported_op_names_op_and_index(tmp_path: Path) -> None:
    svdf = _with_builtin(MODELS / "kws_ref_model.tflite", tmp_path / "svdf.tflite", operator=1, code=27)
    with pytest.raises(UnsupportedOpError, match=r"operator 1 is SVDF, which tinyflow's TFLite importer") as err:
        from_tflite(svdf)
    assert err.value.op == "SVDF"


def test_float_model_where_int8_is_required() -> None:
    g = from_tflite(MODELS / "tiny_float.tflite")  # a float model imports ...
    assert g[g.inputs[0]].elem_bytes == 4
    with pytest.raises(ModelImportError, match=r"is a float32 model .* network.require_int8=true needs an int8"):
        from_tflite(MODELS / "tiny_float.tflite", require_int8=True)  # ... unless int8 is required
    from_tflite(MODELS / "kws_ref_model.tflite", require_int8=True)


def test_network_config_errors_surface_as_themselves(tmp_path: Path) -> None:
    """Through the network config (Hydra instantiate), an import error keeps its paragraph."""
    from omegaconf import OmegaConf

    from tinyflow.analyze.networks import build_network

    shutil.copy(MODELS / "ad01_int8.tflite", tmp_path / "m.tflite")
    node = OmegaConf.create({"_target_": "tinyflow.ir.tflite_import.from_tflite", "path": str(tmp_path / "x.tflite")})
    with pytest.raises(ModelImportError, match="does not exist"):
        build_network(node)
    node.path = str(tmp_path / "m.tflite")
    assert build_network(node).name == "m"
    assert np.isclose(build_network(node).macs(), 264_192)
