"""Network IR: a DAG of ops with NCHW shapes, built from an arch genome or imported from ONNX / TFLite (no torch)."""

from tinyflow.ir.from_arch import from_arch
from tinyflow.ir.graph import Graph, Node
from tinyflow.ir.ops import OP_KINDS, IRError, OpKind, get_op, register_op

__all__ = [
    "OP_KINDS",
    "Graph",
    "IRError",
    "Node",
    "OpKind",
    "from_arch",
    "from_onnx",
    "from_tflite",
    "get_op",
    "import_model",
    "register_op",
]


def from_onnx(path, **kwargs):
    """Import an ONNX file (see `tinyflow.ir.onnx_import.from_onnx`)."""
    from tinyflow.ir.onnx_import import from_onnx as _from_onnx

    return _from_onnx(path, **kwargs)


def from_tflite(path, **kwargs):
    """Import a TFLite flatbuffer (see `tinyflow.ir.tflite_import.from_tflite`)."""
    from tinyflow.ir.tflite_import import from_tflite as _from_tflite

    return _from_tflite(path, **kwargs)


def import_model(path, **kwargs):
    """Import a model file by its suffix: `.tflite` with the TFLite importer, anything else as ONNX."""
    if str(path).lower().endswith(".tflite"):
        return from_tflite(path, **kwargs)
    return from_onnx(path, **kwargs)


from tinyflow.ir import rnnpool as _rnnpool  # noqa: E402, F401  (registers the `rnnpool` op kind)
