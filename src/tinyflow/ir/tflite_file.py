"""Read a TFLite flatbuffer into plain Python records, through the `tflite` schema package (no TensorFlow).

`read_tflite(path)` checks the file (exists, carries the `TFL3` identifier, every table and buffer it points at
lies inside the file) and returns a `TfliteModel`: its tensors (shape, type, quantization, constant data) and
operators (builtin name, inputs, outputs, options as a dict) of subgraph 0, in file order. A truncated or
corrupt file is one `ModelImportError` paragraph, never a flatbuffers traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyflow.ir.model_errors import ModelImportError

#: TFLite TensorType -> (numpy dtype, bytes per element)
TENSOR_TYPES: dict[int, tuple[Any, int]] = {
    0: (np.float32, 4),
    1: (np.float16, 2),
    2: (np.int32, 4),
    3: (np.uint8, 1),
    4: (np.int64, 8),
    7: (np.int16, 2),
    9: (np.int8, 1),
    10: (np.float64, 8),
}
TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8", 10: "float64"}

#: options table per builtin op: (class name in the `tflite` package, [(key, getter), ...])
_OPTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "CONV_2D": (
        "Conv2DOptions",
        ("Padding", "StrideW", "StrideH", "FusedActivationFunction", "DilationWFactor", "DilationHFactor"),
    ),
    "DEPTHWISE_CONV_2D": (
        "DepthwiseConv2DOptions",
        (
            "Padding",
            "StrideW",
            "StrideH",
            "DepthMultiplier",
            "FusedActivationFunction",
            "DilationWFactor",
            "DilationHFactor",
        ),
    ),
    "FULLY_CONNECTED": ("FullyConnectedOptions", ("FusedActivationFunction", "KeepNumDims")),
    "ADD": ("AddOptions", ("FusedActivationFunction",)),
    "MUL": ("MulOptions", ("FusedActivationFunction",)),
    "AVERAGE_POOL_2D": (
        "Pool2DOptions",
        ("Padding", "StrideW", "StrideH", "FilterWidth", "FilterHeight", "FusedActivationFunction"),
    ),
    "MAX_POOL_2D": (
        "Pool2DOptions",
        ("Padding", "StrideW", "StrideH", "FilterWidth", "FilterHeight", "FusedActivationFunction"),
    ),
    "CONCATENATION": ("ConcatenationOptions", ("Axis", "FusedActivationFunction")),
    "SOFTMAX": ("SoftmaxOptions", ("Beta",)),
    "MEAN": ("ReducerOptions", ("KeepDims",)),
    "SQUEEZE": ("SqueezeOptions", ("SqueezeDimsAsNumpy",)),
    "RESHAPE": ("ReshapeOptions", ("NewShapeAsNumpy",)),
    "STRIDED_SLICE": (
        "StridedSliceOptions",
        ("BeginMask", "EndMask", "EllipsisMask", "NewAxisMask", "ShrinkAxisMask"),
    ),
    "PACK": ("PackOptions", ("ValuesCount", "Axis")),
}


@dataclass
class TfliteTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    type: int
    data: np.ndarray | None  # constant data (None for an activation)
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    quantized_dimension: int = 0

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, f"type {self.type}")

    @property
    def elem_bytes(self) -> int:
        return TENSOR_TYPES.get(self.type, (None, 4))[1]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.elem_bytes if self.shape else self.elem_bytes


@dataclass
class TfliteOperator:
    index: int
    op: str  # builtin name, e.g. CONV_2D (CUSTOM ops: "CUSTOM:<code>")
    inputs: tuple[int, ...]  # tensor indices, -1 = optional input left out
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TfliteModel:
    path: str
    file_bytes: int
    tensors: list[TfliteTensor]
    operators: list[TfliteOperator]
    inputs: list[int]
    outputs: list[int]
    description: str = ""


def _fail(path: str, what: str) -> ModelImportError:
    return ModelImportError(
        f"network.path: '{path}' {what}. Give a complete .tflite flatbuffer as the TFLite converter writes it "
        "(tf.lite.TFLiteConverter ... convert(), written in binary mode)."
    )


def _options(op: Any, name: str) -> dict[str, Any]:
    spec = _OPTIONS.get(name)
    table = op.BuiltinOptions()
    if spec is None or table is None:
        return {}
    import tflite

    cls = getattr(tflite, spec[0])
    opt = cls()
    opt.Init(table.Bytes, table.Pos)
    out: dict[str, Any] = {}
    for key in spec[1]:
        value = getattr(opt, key)()
        out[key.removesuffix("AsNumpy")] = value.tolist() if isinstance(value, np.ndarray) else value
    return out


def read_tflite(path: str | Path) -> TfliteModel:
    """Parse the TFLite flatbuffer at `path` (subgraph 0)."""
    p = Path(path)
    if not p.is_file():
        raise ModelImportError(f"network.path: '{p}' does not exist or is not a file; give the path of a .tflite model")
    buf = p.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise _fail(str(p), "is not a TFLite flatbuffer (no 'TFL3' file identifier in its first 8 bytes)")
    try:
        return _parse(str(p), buf)
    except ModelImportError:
        raise
    except Exception as exc:  # flatbuffers reads past the end of a truncated file as struct / index errors
        raise _fail(
            str(p),
            f"is truncated or corrupt: reading it stopped at {type(exc).__name__} ({str(exc)[:80]}), "
            f"{len(buf)} bytes in the file",
        ) from None


def _parse(path: str, buf: bytes) -> TfliteModel:
    import tflite
    from tflite.utils import BUILTIN_OPCODE2NAME

    size = len(buf)
    model = tflite.Model.GetRootAs(buf, 0)
    if model.SubgraphsLength() < 1:
        raise _fail(path, "holds no subgraph")
    sg = model.Subgraphs(0)
    n_buffers = model.BuffersLength()

    def buffer_data(index: int, dtype: Any, shape: tuple[int, ...]) -> np.ndarray | None:
        if index <= 0 or index >= n_buffers:
            return None
        b = model.Buffers(index)
        if b.Offset() > 1:  # stored after the flatbuffer (models over 2 GB)
            start, length = int(b.Offset()), int(b.Size())
            if start + length > size:
                raise _fail(path, f"is truncated: buffer {index} ends at byte {start + length}, past the file's end")
            raw = np.frombuffer(buf, np.uint8, length, start)
        else:
            if b.DataLength() == 0:
                return None
            raw = b.DataAsNumpy()
        arr = np.frombuffer(raw.tobytes(), dtype)
        want = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if arr.size != want:
            raise _fail(path, f"is corrupt: buffer {index} holds {arr.size} values, its tensor's shape {list(shape)}")
        return arr.reshape(shape)

    tensors = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        ttype = int(t.Type())
        dtype = TENSOR_TYPES.get(ttype, (np.uint8, 1))[0]
        rec = TfliteTensor(i, (t.Name() or b"").decode("utf-8", "replace"), shape, ttype, None)
        rec.data = buffer_data(int(t.Buffer()), dtype, shape) if ttype in TENSOR_TYPES else None
        q = t.Quantization()
        if q is not None and q.ScaleLength():
            rec.scale = q.ScaleAsNumpy().astype(np.float64)
            rec.zero_point = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else np.zeros(1, np.int64)
            rec.quantized_dimension = int(q.QuantizedDimension())
        tensors.append(rec)

    operators = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        name = BUILTIN_OPCODE2NAME.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{(code.CustomCode() or b'').decode('utf-8', 'replace')}"
        ins = tuple(int(v) for v in op.InputsAsNumpy()) if op.InputsLength() else ()
        outs = tuple(int(v) for v in op.OutputsAsNumpy()) if op.OutputsLength() else ()
        bad = [v for v in (*ins, *outs) if v >= len(tensors) or v < -1]
        if bad:
            raise _fail(path, f"is corrupt: operator {i} ({name}) names tensor {bad[0]} of {len(tensors)}")
        operators.append(TfliteOperator(i, name, ins, outs, _options(op, name)))
    inputs = [int(v) for v in sg.InputsAsNumpy()] if sg.InputsLength() else []
    outputs = [int(v) for v in sg.OutputsAsNumpy()] if sg.OutputsLength() else []
    bad = [v for v in (*inputs, *outputs) if not 0 <= v < len(tensors)]  # a negative index must not wrap around
    if bad:
        raise _fail(path, f"is corrupt: the subgraph's inputs / outputs name tensor {bad[0]} of {len(tensors)}")
    desc = (model.Description() or b"").decode("utf-8", "replace")
    return TfliteModel(path, size, tensors, operators, inputs, outputs, desc)
