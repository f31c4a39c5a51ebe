"""Quantization in the IR (docs/design.md §15, issue 21): both importers fill `graph.quant` for every activation
and weight and `graph.constants` with the stored integers in one layout, so a `.tflite` and its tf2onnx `.onnx`
twin carry the same numbers; a Deployment file keeps them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyflow.deployment import Deployment
from tinyflow.ir.onnx_import import from_onnx
from tinyflow.ir.tflite_import import from_tflite
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan

MODELS = Path(__file__).resolve().parent / "data" / "models"  # the published models of ../shared/models
NAMES = ("person_detect", "kws_ref_model", "ad01_int8")
needs_models = pytest.mark.skipif(not (MODELS / "kws_ref_model.tflite").is_file(), reason="tests/data/models absent")


def _twins(name: str):
    return from_tflite(MODELS / f"{name}.tflite"), from_onnx(MODELS / f"{name}.onnx")


def _oihw(node, w: np.ndarray) -> np.ndarray:
    """A weight in one orientation: a linear's as (out, in)."""
    return w if node.op != "linear" or node.attrs.get("weight_transposed") else w.T


@needs_models
@pytest.mark.parametrize("name", NAMES)
def test_every_tensor_and_weight_is_quantized(name: str) -> None:
    for g in _twins(name):
        assert set(g.nodes) <= set(g.quant), f"{g.name}: activations without quantization"
        assert g.meta["int8_io"] == [True, True]
        for node in g:
            for role in ("weight", "bias"):
                if role in node.weights:
                    w, q = g.constants[node.weights[role]], g.quant[node.weights[role]]
                    assert w.dtype == (np.int8 if role == "weight" else np.int32) and q.dtype == str(w.dtype)
                    assert len(q.scale) in (1, node.attrs.get("out_channels", node.attrs.get("out_features")))
                    assert q.axis is None or q.axis < w.ndim


@needs_models
@pytest.mark.parametrize("name", NAMES)
def test_tflite_and_its_onnx_twin_carry_the_same_numbers(name: str) -> None:
    """Node for node: the same activation scales and zero points, the same integer weights (the TF Lite OHWI /
    1HWO weights stored as the ONNX OIHW), the same per-channel weight scales and int32 biases."""
    t, o = _twins(name)
    assert len(t) == len(o)
    for a, b in zip(t.topological_order(), o.topological_order()):
        qa, qb = t.quant[a.name], o.quant[b.name]
        assert qa.zero_point == qb.zero_point and np.allclose(qa.scales(), qb.scales(), rtol=1e-6), a.name
        assert sorted(a.weights) == sorted(b.weights)
        for role in a.weights:
            wa, wb = t.constants[a.weights[role]], o.constants[b.weights[role]]
            assert np.array_equal(_oihw(a, wa), _oihw(b, wb)), (a.name, role)
            sa, sb = t.quant[a.weights[role]].scales(), o.quant[b.weights[role]].scales()
            assert np.allclose(sa, sb, rtol=1e-6), (a.name, role)


@needs_models
def test_avgpool_records_count_include_pad() -> None:
    for g in _twins("person_detect"):
        pools = [n for n in g if n.op == "avgpool"]
        assert pools and all(n.attrs["count_include_pad"] == 0 for n in pools)


def test_float_onnx_model_carries_no_constants(tmp_path) -> None:
    """A float ONNX file has nothing quantized: no quant, no constants (a Deployment stays small)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 4], np.ones(12, np.float32))
    model = helper.make_model(
        helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "g", [x], [y], [w]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    onnx.save(model, tmp_path / "f.onnx")
    g = from_onnx(tmp_path / "f.onnx")
    assert g.quant == {} and g.constants == {}


@needs_models
def test_deployment_file_keeps_quantization_and_constants(tmp_path) -> None:
    from tinyflow.firmware.oracle import run_oracle
    from tinyflow.firmware.qmodel import build_qmodel

    g = from_tflite(MODELS / "kws_ref_model.tflite")
    dep = Deployment(g, layer_plan(g, MemoryConfig()), {}, model_path=str(MODELS / "kws_ref_model.tflite"))
    back = Deployment.load(dep.save(tmp_path / "deployment.npz"))
    assert back.graph.quant == g.quant and sorted(back.graph.constants) == sorted(g.constants)
    assert all(np.array_equal(back.graph.constants[k], v) for k, v in g.constants.items())
    a, b = build_qmodel(g), build_qmodel(back.graph)
    x = np.random.default_rng(1).integers(-128, 128, (4, *a.input_shape[1:])).astype(np.int8).transpose(0, 2, 3, 1)
    assert np.array_equal(run_oracle(a, x), run_oracle(b, x))
