"""ONNX import: the same numbers as the arch builder on an export of the same StaticNet; QDQ; bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinyflow.arch import mobilenetv2
from tinyflow.arch.zoo import mbv2_rd
from tinyflow.contracts import MemoryConfig
from tinyflow.cost import model_flash_bytes
from tinyflow.ir import from_arch, from_onnx
from tinyflow.ir.onnx_import import OnnxImportError, assign_blocks
from tinyflow.memory import check_no_overlap, layer_plan
from tinyflow.memory.receptive_field import graph_patch_geometry

torch = pytest.importorskip("torch")


def export(arch, path: Path) -> Path:  # type: ignore[no-untyped-def]
    from tinyflow.nn.static import StaticNet

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = StaticNet(arch).eval()
    x = torch.randn(1, arch.in_channels, arch.resolution, arch.resolution)
    torch.onnx.export(model, x, str(path), dynamo=False, opset_version=17)
    return path


@pytest.fixture(scope="module")
def mbv2_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(mobilenetv2(1.0, 224), tmp_path_factory.mktemp("onnx") / "mbv2.onnx")


def test_mobilenetv2_onnx_matches_arch(mbv2_onnx: Path) -> None:
    g = from_onnx(mbv2_onnx)
    ga = from_arch(mobilenetv2(1.0, 224))
    assert (g.macs(), g.params(), model_flash_bytes(g)) == (ga.macs(), ga.params(), model_flash_bytes(ga))
    assert [n.block for n in g] == [n.block for n in ga]
    assert [n.shape for n in g] == [n.shape for n in ga]
    plan = layer_plan(g, MemoryConfig())
    assert plan.peak_live_bytes == 1_404_928
    assert plan.peak_layer == "/blocks.1/expand/expand.0/Conv"
    assert plan.per_layer[0]["working_set_bytes"] == 551_936
    assert layer_plan(g, MemoryConfig(inplace_depthwise=False)).peak_live_bytes == 1470 * 1024
    check_no_overlap(plan.tensors)
    assert plan.arena_bytes == layer_plan(ga, MemoryConfig()).arena_bytes
    # patch geometry from the imported graph: 4x4 patches over stem + 4 blocks need 75x75 input patches
    assert graph_patch_geometry(g, 5, 4).input_patch_hw == (75, 75)
    # weights name the ONNX initializers (BN folded by the exporter)
    inits = {i.name for i in onnx.load(str(mbv2_onnx)).graph.initializer}
    assert all(name in inits for n in g for name in n.weights.values())


def test_mbv2_rd_onnx_patch_input_63(tmp_path: Path) -> None:
    arch = mbv2_rd(1.0, 224)
    g = from_onnx(export(arch, tmp_path / "rd.onnx"))
    assert graph_patch_geometry(g, 5, 4).input_patch_hw == (63, 63)
    assert graph_patch_geometry(from_arch(arch), 5, 4).input_patch_hw == (63, 63)
    assert layer_plan(g, MemoryConfig()).peak_live_bytes == layer_plan(from_arch(arch), MemoryConfig()).peak_live_bytes


def test_block_fallback_without_names(mbv2_onnx: Path, tmp_path: Path) -> None:
    model = onnx.load(str(mbv2_onnx))
    for i, n in enumerate(model.graph.node):
        n.name = f"n{i}"
    anon = tmp_path / "anon.onnx"
    onnx.save(model, str(anon))
    g = from_onnx(anon)
    assert [n.block for n in g] == [n.block for n in from_arch(mobilenetv2(1.0, 224))]
    assign_blocks(g)  # idempotent


def _qdq_model(tmp_path: Path) -> tuple[Path, Path]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    arch = mobilenetv2(0.35, 64, num_classes=10)
    fp = export(arch, tmp_path / "fp.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            name = onnx.load(str(fp)).graph.input[0].name
            self.data = iter([{name: rng.standard_normal((1, 3, 64, 64)).astype(np.float32)} for _ in range(2)])

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.data, None)

    q = tmp_path / "int8.onnx"
    quantize_static(
        str(fp),
        str(q),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return fp, q


@pytest.mark.slow
def test_qdq_int8_model_costs_as_int8(tmp_path: Path) -> None:
    fp, q = _qdq_model(tmp_path)
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(q)).graph.node)
    gq, gf = from_onnx(q), from_onnx(fp)
    assert (gq.macs(), gq.params()) == (gf.macs(), gf.params())
    assert model_flash_bytes(gq) == model_flash_bytes(gf)
    # with float32 as the default element size, the QDQ model's quantized tensors still cost 1 byte
    f32 = MemoryConfig(dtype_bytes=4)
    assert layer_plan(gq, f32).peak_live_bytes == layer_plan(gf, MemoryConfig()).peak_live_bytes
    assert layer_plan(gf, f32).peak_live_bytes == 4 * layer_plan(gf, MemoryConfig()).peak_live_bytes
    conv = next(n for n in gq if n.op == "conv2d")
    assert conv.weights["weight"].endswith("_quantized")


def _save(tmp_path: Path, nodes, inits, x_shape, y_shape, name="m", opset=17) -> Path:  # type: ignore[no-untyped-def]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def test_handmade_graph_with_many_ops(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    inits = {
        "w1": rng.standard_normal((8, 3, 3, 3)),
        "g": np.ones(8),
        "b": np.zeros(8),
        "m": np.zeros(8),
        "v": np.ones(8),
        "w2": rng.standard_normal((8, 8, 1, 1)),
        "shape": np.array([1, -1]),
        "fc": rng.standard_normal((16 * 4 * 4, 5)),
        "fcb": np.zeros(5),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["bn"], name="bn1"),
        helper.make_node("HardSwish", ["bn"], ["a1"], name="hs"),
        helper.make_node("Conv", ["a1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Sigmoid", ["c2"], ["s"], name="sig"),
        helper.make_node("Mul", ["a1", "s"], ["gated"], name="gate"),
        helper.make_node("Concat", ["gated", "a1"], ["cat"], name="cat", axis=1),
        helper.make_node("MaxPool", ["cat"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Relu", ["p"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["flat"], name="reshape"),
        helper.make_node("MatMul", ["flat", "fc"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "fcb"], ["y"], name="fc_bias"),
    ]
    g = from_onnx(_save(tmp_path, nodes, inits, [1, 3, 16, 16], [1, 5]))
    ops = {n.name: n for n in g}
    assert ops["conv1"].attrs["act"] == "hardswish" and "bn_scale" in ops["conv1"].weights  # BN + act folded
    assert ops["conv2"].attrs["act"] == "sigmoid"
    assert ops["cat"].shape == (1, 16, 8, 8)
    assert ops["relu"].op == "act"  # a pool's output: a stand-alone, in-place activation
    assert ops["fc"].weights == {"weight": "fc", "bias": "fcb"} and ops["fc"].shape == (1, 5)
    assert g.macs() == 8 * 8 * 8 * 27 + 64 * 64 + 64 * 8 + 256 * 5
    plan = layer_plan(g, MemoryConfig())
    check_no_overlap(plan.tensors)
    assert plan.tensor("relu").alias_kind == "inplace"


def test_not_onnx_file(tmp_path: Path) -> None:
    junk = tmp_path / "model.onnx"
    junk.write_text("this is not a protobuf \x00\xff" * 20)
    with pytest.raises(OnnxImportError, match=r"is not an ONNX model"):
        from_onnx(junk)
    with pytest.raises(OnnxImportError, match=r"does not exist"):
        from_onnx(tmp_path / "missing.onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(OnnxImportError, match=r"empty.onnx"):
        from_onnx(empty)


def test_unsupported_op_names_type_and_node(tmp_path: Path) -> None:
    nodes = [helper.make_node("LRN", ["x"], ["y"], name="my_lrn", size=3)]
    path = _save(tmp_path, nodes, {}, [1, 4, 8, 8], [1, 4, 8, 8])
    with pytest.raises(OnnxImportError, match=r"node 'my_lrn' \(LRN\).*op type 'LRN' is not supported"):
        from_onnx(path)


def test_old_opset_and_dynamic_shape(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    old = _save(tmp_path, nodes, {}, [1, 4, 8, 8], [1, 4, 8, 8], name="old", opset=11)
    with pytest.raises(OnnxImportError, match=r"opset 11"):
        from_onnx(old)
    dyn = _save(tmp_path, nodes, {}, ["N", 4, "H", "W"], ["N", 4, "H", "W"], name="dyn")
    with pytest.raises(OnnxImportError, match=r"network.input_shape"):
        from_onnx(dyn)
    g = from_onnx(dyn, input_shape=[1, 4, 8, 8])
    assert g["r"].shape == (1, 4, 8, 8)


def test_patch_plan_same_from_onnx_and_arch(mbv2_onnx: Path) -> None:
    from tinyflow_plugins.schedulers.patch import PatchScheduler

    sched = PatchScheduler(n_patches=4, patch_blocks=5)
    p_onnx = sched.plan(from_onnx(mbv2_onnx), MemoryConfig())
    p_arch = sched.plan(from_arch(mobilenetv2(1.0, 224)), MemoryConfig())
    assert (p_onnx.peak_live_bytes, p_onnx.macs, p_onnx.arena_bytes) == (
        p_arch.peak_live_bytes,
        p_arch.macs,
        p_arch.arena_bytes,
    )
    assert list(p_onnx.extra["input_patch_hw"]) == [75, 75]
    assert 4 * p_onnx.peak_live_bytes <= 1_404_928


@pytest.mark.slow
def test_dynamo_export_imports_with_structural_blocks(tmp_path: Path) -> None:
    """torch.export-based ONNX (opset 20, ReduceMean + Reshape, names without module paths)."""
    from tinyflow.nn.static import StaticNet

    arch = mobilenetv2(0.35, 32, num_classes=10)
    path = tmp_path / "dyn.onnx"
    torch.onnx.export(StaticNet(arch).eval(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=True)
    g, ga = from_onnx(path), from_arch(arch)
    assert g.macs() == ga.macs() and g.params() == ga.params()
    assert [n.block for n in g] == [n.block for n in ga]
    assert layer_plan(g, MemoryConfig()).peak_live_bytes == layer_plan(ga, MemoryConfig()).peak_live_bytes


def test_pad_folds_into_conv_and_softmax(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)), "pads": np.array([0, 0, 1, 1, 0, 0, 2, 2])}
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad"),
        helper.make_node("Conv", ["xp", "w"], ["c"], name="conv", strides=[2, 2]),
        helper.make_node("LeakyRelu", ["c"], ["a"], name="lrelu", alpha=0.1),
        helper.make_node("Softmax", ["a"], ["y"], name="softmax", axis=1),
    ]
    g = from_onnx(_save(tmp_path, nodes, inits, [1, 3, 9, 9], [1, 4, 5, 5]))
    conv = g["conv"]
    assert conv.attrs["padding"] == (1, 1, 2, 2) and conv.inputs == ("x",)
    assert conv.attrs["act"] == "leakyrelu" and g["softmax"].op == "act"
    assert g["softmax"].shape == (1, 4, 5, 5)  # (9 + 1 + 2 - 3) // 2 + 1
    # a Pad read by something else than a conv is refused, naming the node
    bad = [
        helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad2"),
        helper.make_node("Relu", ["xp"], ["y"], name="r"),
    ]
    with pytest.raises(OnnxImportError, match=r"node 'pad2' \(Pad\)"):
        from_onnx(_save(tmp_path, bad, inits, [1, 3, 9, 9], [1, 3, 12, 12], name="bad"))


# ---------------------------------------------------------------- graphs as converters write them (issues 14, 16)
def test_long_identity_chain_imports(tmp_path: Path) -> None:
    """3000 Identity nodes between a Pad and the conv reading it: the walk to the Pad's readers is iterative (it
    used to recurse once per Identity: RecursionError)."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)), "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1])}
    nodes = [helper.make_node("Pad", ["x", "pads"], ["t0"], name="pad")]
    nodes += [helper.make_node("Identity", [f"t{i}"], [f"t{i + 1}"], name=f"id{i}") for i in range(3000)]
    nodes += [helper.make_node("Conv", ["t3000", "w"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["y"])]
    g = from_onnx(_save(tmp_path, nodes, inits, [1, 3, 8, 8], [1, 4, 8, 8]))
    assert [n.op for n in g] == ["input", "conv2d"] and g["conv"].attrs["padding"] == (1, 1, 1, 1)
    assert g["conv"].attrs["act"] == "relu"


def test_two_producers_of_one_tensor_is_an_import_error(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["y"], name="first"),
        helper.make_node("Sigmoid", ["x"], ["y"], name="second"),
    ]
    path = tmp_path / "ssa.onnx"
    graph = helper.make_graph(
        nodes,
        "ssa",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(OnnxImportError, match=r"node 'second' \(Sigmoid\): writes tensor 'y', which node 'first'"):
        from_onnx(path)


def test_a_malformed_node_is_named(tmp_path: Path) -> None:
    """A node the importer cannot read (MaxPool without kernel_shape) is an import error naming it, also through
    the network config, never 'network: cannot build it from its config'."""
    from omegaconf import OmegaConf

    from tinyflow.analyze.networks import build_network

    nodes = [helper.make_node("MaxPool", ["x"], ["y"], name="pool")]
    path = _save(tmp_path, nodes, {}, [1, 3, 8, 8], [1, 3, 4, 4], name="nokernel")
    with pytest.raises(OnnxImportError, match=r"node 'pool' \(MaxPool\): cannot be read \(KeyError") as err:
        build_network(OmegaConf.create({"_target_": "tinyflow.ir.onnx_import.from_onnx", "path": str(path)}))
    assert "cannot build it from its config" not in str(err.value)


def test_transposes_fold_cancel_or_are_ops(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((4, 3, 3, 3))}
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], name="to_nchw", perm=[0, 3, 1, 2]),  # the NHWC input
        helper.make_node("Conv", ["xt", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["c"], ["c_nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["c_nhwc"], ["c2"], name="back", perm=[0, 3, 1, 2]),  # cancels
        helper.make_node("Relu", ["c2"], ["r"], name="relu"),
        helper.make_node("Transpose", ["r"], ["y"], name="real", perm=[0, 1, 3, 2]),  # swaps H and W: an op
    ]
    g = from_onnx(_save(tmp_path, nodes, inits, [1, 6, 8, 3], [1, 4, 8, 6], name="tr"))
    assert g.meta["input_layout"] == "NHWC" and g[g.inputs[0]].shape == (1, 3, 6, 8)
    assert [n.op for n in g] == ["input", "conv2d", "transpose"] and g["conv"].attrs["act"] == "relu"
    t = next(n for n in g if n.op == "transpose")
    assert t.shape == (1, 4, 8, 6) and g.outputs == [t.name]
    lt = layer_plan(g, MemoryConfig())
    assert lt.peak_live_bytes == 2 * (4 * 6 * 8)  # the transpose is a tensor of its own (memory.dtype_bytes: 1)


def test_pad_before_quantize_dequantize(tmp_path: Path) -> None:
    """tf2onnx's explicit PAD of a QDQ model: Pad -> QuantizeLinear -> DequantizeLinear -> Conv."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q0"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq0"),
        helper.make_node("Pad", ["xd", "pads"], ["p"], name="pad"),
        helper.make_node("QuantizeLinear", ["p", "s", "zp"], ["pq"], name="q1"),
        helper.make_node("DequantizeLinear", ["pq", "s", "zp"], ["pd"], name="dq1"),
        helper.make_node("Conv", ["pd", "w"], ["y"], name="conv", strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "padqdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])],
        initializer=inits,
    )
    path = tmp_path / "padqdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    g = from_onnx(path)
    conv = g["conv"]
    assert (
        conv.inputs == ("x",) and conv.attrs["padding"] == (1, 1, 1, 1) and conv.attrs["explicit_pad"] == (1, 1, 1, 1)
    )
    assert g["x"].elem_bytes == 1  # stored quantized


def test_resnet_blocks_and_identity_reshapes_from_structure(tmp_path: Path) -> None:
    """A graph without `blocks.<i>` names: residual blocks end at their add, a reshape that changes nothing is no
    node, and the pool / classifier are the tail."""
    rng = np.random.default_rng(0)
    inits = {
        "w0": rng.standard_normal((8, 3, 3, 3)),
        "w1": rng.standard_normal((8, 8, 3, 3)),
        "w2": rng.standard_normal((8, 8, 3, 3)),
        "same": np.array([1, 8, 8, 8]),
        "fc": rng.standard_normal((8, 4)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"], name="stem_relu"),
        helper.make_node("Reshape", ["ar", "same"], ["ars"], name="noop"),
        helper.make_node("Conv", ["ars", "w1"], ["b"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["br"], name="c1_relu"),
        helper.make_node("Conv", ["br", "w2"], ["c"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["ars", "c"], ["d"], name="add"),
        helper.make_node("Relu", ["d"], ["dr"], name="add_relu"),
        helper.make_node("GlobalAveragePool", ["dr"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc"),
    ]
    g = from_onnx(_save(tmp_path, nodes, inits, [1, 3, 8, 8], [1, 4], name="res"))
    assert "noop" not in g.nodes and g["add"].attrs["act"] == "relu"  # TFLite's ADD with a fused ReLU
    assert {n.name: n.block for n in g if n.op != "input"} == {
        "stem": 0,
        "c1": 1,
        "c2": 1,
        "add": 1,
        "pool": 2,
        "flat": 2,
        "fc": 2,
    }
    assert graph_patch_geometry(g, 2, 2).stage_output == "add"
