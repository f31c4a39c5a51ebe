"""The `transpose` kind, added through the op-kind registry alone (`tinyflow.ir.kinds.transpose`): its parts live in
that one module; an int8 QDQ network with a mid-graph NCHW -> NHWC transpose before flatten + linear (as a
TF-converted keyword-spotting net has) runs as firmware on qemu bit-exact with the oracle and within one int8 step
of onnxruntime on the same file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyflow.device import Device
from tinyflow.ir.op_registry import OP_PARTS, Unsupported, op_part
from tinyflow.ir.ops import get_op

F746 = Device("stm32f746", 320, 1024, "cortex_m7", 216)
MODULE = "tinyflow.ir.kinds.transpose"


def test_all_of_transposes_parts_live_in_its_module() -> None:
    parts = OP_PARTS["transpose"]
    assert not isinstance(parts.layers, Unsupported)
    callables = [parts.executor, parts.lowering, *(f for lp in parts.layers.values() for f in (lp.oracle, lp.emission))]
    assert all(callable(f) and f.__module__ == MODULE for f in callables)
    assert type(get_op("transpose")).__module__ == MODULE
    assert op_part("transpose", "receptive_field") == "barrier"
    assert get_op("transpose").macs(None, [(1, 6, 5, 4)], (1, 5, 4, 6)) == 0


@pytest.mark.parametrize("perm", [(0, 2, 3, 1), (0, 3, 1, 2), (0, 1, 3, 2), (0, 3, 2, 1)])
def test_oracle_is_the_ir_transpose_in_the_stored_layout(perm: tuple[int, ...]) -> None:
    """The oracle on the firmware's NHWC storage equals the IR's NCHW transpose stored as NHWC."""
    from tinyflow.firmware.qmodel import QLayer, hwc, to_nhwc
    from tinyflow.ir.kinds.transpose import oracle, stored_perm

    x = np.random.default_rng(0).integers(-128, 128, (2, 6, 5, 4)).astype(np.int8)
    out_shape = tuple(x.shape[p] for p in perm)
    layer = QLayer("t", "transpose", ["x"], [x.shape], out_shape, {"perm": stored_perm(perm), "in_dims": hwc(x.shape)})
    assert np.array_equal(oracle(layer, [to_nhwc(x)]), to_nhwc(x.transpose(perm)))


def _kws_like_qdq(path: Path) -> None:
    """input (1,3,10,8) -> Q/DQ -> conv 3x3/2 + relu (6 ch) -> Q/DQ -> Transpose NCHW->NHWC -> Q/DQ -> Flatten ->
    Gemm (5) -> Q/DQ: int8 activations, per-channel int8 weights, int32 biases."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits: list = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    nodes: list = []

    def qdq(x: str, tag: str, scale: float, zp: int) -> str:
        s, z = const(f"{tag}_s", np.float32(scale)), const(f"{tag}_z", np.int8(zp))
        nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [f"{tag}_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_q", s, z], [f"{tag}_dq"]))
        return f"{tag}_dq"

    def weight(tag: str, w: np.ndarray, scales: np.ndarray, axis: int) -> str:
        q = const(f"{tag}_wq", w.astype(np.int8))
        s, z = const(f"{tag}_ws", scales.astype(np.float32)), const(f"{tag}_wz", np.zeros(len(scales), np.int8))
        nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [f"{tag}_w"], axis=axis))
        return f"{tag}_w"

    def bias(tag: str, b: np.ndarray, scales: np.ndarray) -> str:
        q, s = const(f"{tag}_bq", b.astype(np.int32)), const(f"{tag}_bs", scales.astype(np.float32))
        z = const(f"{tag}_bz", np.zeros(len(scales), np.int32))
        nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [f"{tag}_b"], axis=0))
        return f"{tag}_b"

    s_x, s1, s2 = 1 / 127, 3 / 255, 8 / 255
    x = qdq("input", "x", s_x, 3)
    sw1 = rng.uniform(0.004, 0.008, 6)
    w1 = weight("conv", rng.integers(-127, 128, (6, 3, 3, 3)), sw1, 0)
    b1 = bias("conv", rng.integers(-300, 300, 6), s_x * sw1)
    nodes.append(helper.make_node("Conv", [x, w1, b1], ["conv_out"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    nodes.append(helper.make_node("Relu", ["conv_out"], ["relu_out"]))
    a = qdq("relu_out", "a", s1, -128)
    nodes.append(helper.make_node("Transpose", [a], ["nhwc"], perm=[0, 2, 3, 1]))
    t = qdq("nhwc", "t", s1, -128)
    nodes.append(helper.make_node("Flatten", [t], ["flat"], axis=1))
    sw2 = rng.uniform(0.002, 0.004, 5)
    w2 = weight("fc", rng.integers(-127, 128, (5, 120)), sw2, 0)
    b2 = bias("fc", rng.integers(-500, 500, 5), s1 * sw2)
    nodes.append(helper.make_node("Gemm", ["flat", w2, b2], ["logits"], transB=1))
    out = qdq("logits", "y", s2, 5)
    nodes.append(helper.make_node("Identity", [out], ["output"]))
    graph = helper.make_graph(
        nodes,
        "kws_transpose",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 10, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_transpose_firmware_is_bit_exact_and_matches_onnxruntime(tmp_path: Path) -> None:
    from tinyflow.deployment import Deployment
    from tinyflow.firmware import build
    from tinyflow.firmware.project import FirmwareSettings, make_firmware
    from tinyflow.firmware.qmodel import build_qmodel
    from tinyflow.ir import from_onnx
    from tinyflow.memory.config import MemoryConfig
    from tinyflow.memory.layer_plan import layer_plan

    path = tmp_path / "kws_transpose.onnx"
    _kws_like_qdq(path)
    graph = from_onnx(path)
    assert [n.op for n in graph.topological_order()] == ["input", "conv2d", "transpose", "flatten", "linear"]
    assert [la.kind for la in build_qmodel(graph).layers] == ["conv", "transpose", "view", "linear"]
    if build.missing_tools():
        pytest.skip(f"{build.missing_tools()} not installed")
    plan = layer_plan(graph, MemoryConfig())
    images = np.random.default_rng(1).uniform(-1, 1, (6, 3, 10, 8)).astype(np.float32)
    deployment = Deployment(graph, plan, {}, model_path=str(path), source="test")
    res = make_firmware(deployment, F746, tmp_path / "out", images, FirmwareSettings(images=6, timeout_s=300))
    assert res["images"] == 6 and res["bit_exact"] == 6, res
    print(f"transpose firmware: max_diff_steps_onnxruntime = {res['max_diff_steps_onnxruntime']}")
    assert res["max_diff_steps_onnxruntime"] <= 1, res
