"""Import an ONNX file (opset >= 13) into the network IR, using ONNX shape inference as a cross-check.

Supported: Conv, Gemm, MatMul (constant right operand), Add, Mul, Concat, Relu, Clip, HardSwish, HardSigmoid,
Sigmoid, Tanh, LeakyRelu, Softmax, MaxPool, AveragePool, GlobalAveragePool, ReduceMean over H and W, Flatten,
Reshape (constant shape), BatchNormalization, Pad (zero, read only by convs: folded into their padding),
QuantizeLinear / DequantizeLinear, Identity, Dropout, Constant. Anything else is an error naming the op and node.

Folding, as an int8 runtime executes the model:
- BatchNormalization after a conv folds into it; an activation after a conv / linear is fused into it (when the
  conv's output has no other reader); a constant Add after a MatMul becomes its bias.
- QDQ models: a Q/DQ pair on an activation is no tensor of its own (the producer's tensor, stored as int8: its
  node gets `elem_bytes` = 1, 2 for int16); a DequantizeLinear of a constant is that constant (the weight keeps
  the name of the quantized initializer). So an int8 QDQ model costs as int8 whatever `memory.dtype_bytes` says.
- QDQ models carry their quantization in the IR (`tinyflow.ir.quant`): `graph.quant[node]` is the scale and zero
  point of the QuantizeLinear after the node's output (through fused activations; for an int8 graph input, the
  DequantizeLinear reading it), `graph.quant[weight]` a weight's or bias's (per channel along its axis), and
  `graph.constants[weight]` the stored integer values (int8 weights in the file's layout, OIHW for convs, int32
  biases; a weight left in float keeps its float values). `graph.meta["int8_io"]`: the file's input and output
  are int8 tensors (a converted TF Lite model).

Blocks: a node name containing `blocks.<i>` (as `torch.onnx.export(StaticNet)` writes, e.g.
`/blocks.3/expand/expand.0/Conv`) puts the node in block i+1; unnamed nodes before the first block are the stem
(block 0), those after the last block the tail (N+1). Fallback when no name carries a block index (an MBConv-like
network from another exporter): the first conv and what precedes it are block 0; a new block starts after each
linear 1x1 conv (a projection, no activation) unless a residual add follows it at once, and after each add;
the global pool, flatten and classifier (and a conv just before the pool) are the tail.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from tinyflow.errors import TinyflowError
from tinyflow.ir.blocks import assign_blocks
from tinyflow.ir.dequantize import dequantize
from tinyflow.ir.graph import Graph, Node
from tinyflow.ir.model_errors import ModelImportError
from tinyflow.ir.model_errors import UnsupportedOpError as BaseUnsupportedOpError
from tinyflow.ir.ops import IRError
from tinyflow.ir.quant import InvalidQuantizationError, QuantParams

MIN_OPSET = 13
#: bounds on what an import may allocate (a model for a microcontroller holds a few MB of constants): the file read
#: whole, and a constant folded from two others (an N×1 plus a 1×N initializer is N² elements)
MAX_MODEL_BYTES = 256 * 1024 * 1024
MAX_FOLDED_ELEMENTS = 4 * 1024 * 1024
SUPPORTED = [
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Mul",
    "Concat",
    "Relu",
    "Clip",
    "HardSwish",
    "HardSigmoid",
    "Sigmoid",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Flatten",
    "Reshape",
    "BatchNormalization",
    "QuantizeLinear",
    "DequantizeLinear",
    "Identity",
    "Dropout",
    "Constant",
    "Pad",
    "Softmax",
    "LeakyRelu",
    "Tanh",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
]
_PASS = {"Identity", "Dropout", "QuantizeLinear", "DequantizeLinear"}


class OnnxImportError(ModelImportError):
    """An ONNX file cannot be imported (not ONNX, too old an opset, an unsupported op or shape)."""


class UnsupportedOpError(OnnxImportError, BaseUnsupportedOpError):
    """The file holds an op type the importer does not read (`op`)."""

    def __init__(self, message: str, op: str):
        BaseUnsupportedOpError.__init__(self, message, op)


def _load(path: str | Path) -> Any:
    import onnx

    p = Path(path)
    if not p.is_file():
        raise OnnxImportError(f"network.path: '{p}' does not exist or is not a file; give the path of a .onnx model")
    size = p.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise OnnxImportError(
            f"network.path: '{p}' is {size / 2**20:.0f} MB; tinyflow reads model files up to "
            f"{MAX_MODEL_BYTES >> 20} MB (a microcontroller's flash holds a few MB). Give the int8 model for the "
            "device."
        )
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # protobuf raises several types for garbage input
        raise OnnxImportError(
            f"network.path: '{p}' is not an ONNX model ({type(exc).__name__}: {str(exc)[:120]}). "
            "Export one with torch.onnx.export or the pipeline's deploy stage."
        ) from None
    if not model.graph.node:
        raise OnnxImportError(
            f"network.path: '{p}' is not an ONNX model (it parses to no graph nodes). Give a .onnx file exported "
            "with torch.onnx.export or the pipeline's deploy stage."
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise OnnxImportError(
            f"network.path: '{p}' uses ONNX opset {opset}; tinyflow imports opset >= {MIN_OPSET}. Convert it with "
            f"onnx.version_converter.convert_version(model, {MIN_OPSET}) or re-export with a newer opset."
        )
    return model


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _dims(value_info: Any) -> list[int | str]:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


class _Importer:
    def __init__(self, model: Any, path: str, input_shape: tuple[int, ...] | None):
        import onnx
        from onnx import numpy_helper

        self.path = path
        # inference is a cross-check only: our own op kinds infer every shape
        with contextlib.suppress(Exception):
            model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        self.model = model
        g = model.graph
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.const_name: dict[str, str] = {n: n for n in self.consts}  # tensor -> initializer it came from
        self.onnx_shapes: dict[str, list] = {vi.name: _dims(vi) for vi in [*g.value_info, *g.output, *g.input]}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for n in g.node:
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.graph_outputs = {o.name for o in g.output}
        self.tensor_node: dict[str, str] = {}  # onnx tensor -> IR node producing it
        self.pending_pad: dict[str, tuple[str, tuple[int, int, int, int]]] = {}  # Pad output -> (input, t/l/b/r)
        self.pending_tr: dict[str, tuple[str, tuple[int, ...]]] = {}  # Transpose output -> (input, perm)
        self.ir = Graph(Path(path).stem)
        self.ir.meta["onnx_path"] = str(path)
        self.input_shape = input_shape

    # ---- helpers ------------------------------------------------------------------------------------
    def fail(self, node: Any, msg: str) -> OnnxImportError:
        return OnnxImportError(f"{self.path}: node '{node.name or node.output[0]}' ({node.op_type}): {msg}")

    def readers(self, tensor: str) -> list[Any]:
        """ONNX nodes reading `tensor`, looking through Identity / Dropout / Q / DQ (iteratively: a long chain of
        pass-through nodes must not hit Python's recursion limit)."""
        out: list[Any] = []
        stack, seen = [tensor], set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            for c in self.consumers.get(t, []):
                if c.op_type in _PASS and c.output:
                    stack.append(c.output[0])
                else:
                    out.append(c)
            if t in self.graph_outputs:
                out.append(None)
        return out

    def src(self, node: Any, tensor: str) -> Node:
        if tensor in self.pending_tr:  # a real transpose: an op with its own tensor (or a view, if order-preserving)
            base, perm = self.pending_tr.pop(tensor)
            x = self.src(node, base)
            shape = tuple(x.shape[p] for p in perm)
            moved = [p for p in perm if x.shape[p] != 1]
            name = self.unique(f"{tensor}.transpose")
            if moved == sorted(moved):
                ir_node = self.ir.add(name, "reshape", [x.name], {"shape": shape}, block=0, elem_bytes=x.elem_bytes)
            else:
                ir_node = self.ir.add(name, "transpose", [x.name], {"perm": perm}, block=0, elem_bytes=x.elem_bytes)
            self.moved_quant(x.name, ir_node.name, perm)
            self.tensor_node[tensor] = ir_node.name
            return ir_node
        try:
            return self.ir.nodes[self.tensor_node[tensor]]
        except KeyError:
            raise self.fail(node, f"input '{tensor}' is neither produced by a supported op nor a graph input") from None

    def moved_quant(self, src: str, dst: str, perm: tuple[int, ...]) -> None:
        """A transpose moves values unchanged: its output has its input's quantization (a channel axis moved)."""
        q = self.ir.quant.get(src)
        if q is not None:
            axis = perm.index(q.axis) if q.axis is not None and q.axis in perm else q.axis
            self.ir.quant[dst] = QuantParams(q.scale, q.zero_point, axis, q.dtype)

    def const(self, node: Any, tensor: str, what: str) -> np.ndarray:
        if tensor not in self.consts:
            raise self.fail(node, f"{what} '{tensor}' must be a constant (an initializer or Constant node)")
        return self.consts[tensor]

    def name_of(self, node: Any) -> str:
        return self.unique(node.name or f"{node.op_type}_{node.output[0]}")

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.ir.nodes:
            k += 1
            name = f"{base}_{k}"
        return name

    def add(self, node: Any, op: str, inputs: list[str], attrs: dict, weights: dict | None = None) -> Node:
        # a view holds its input's bytes, so it has the input's element size
        elem = self.ir.nodes[inputs[0]].elem_bytes if op in ("reshape", "flatten") and inputs else None
        try:
            ir_node = self.ir.add(self.name_of(node), op, inputs, attrs, block=0, weights=weights, elem_bytes=elem)
        except IRError as exc:
            raise OnnxImportError(f"{self.path}: {exc}") from None
        self.bind(node.output[0], ir_node)
        return ir_node

    def bind(self, tensor: str, ir_node: Node) -> None:
        self.tensor_node[tensor] = ir_node.name
        onnx_shape = self.onnx_shapes.get(tensor)
        known = bool(onnx_shape) and all(isinstance(d, int) and d > 0 for d in onnx_shape)
        if known and list(onnx_shape) != list(ir_node.shape):
            raise OnnxImportError(
                f"{self.path}: node '{ir_node.name}' ({ir_node.op}): tinyflow infers output shape "
                f"{list(ir_node.shape)} but ONNX shape inference gives {onnx_shape} for '{tensor}'"
            )

    def fusable(self, producer: Node, tensor: str) -> bool:
        """An activation / BN on `tensor` can fold into `producer` (a conv or linear read by nothing else)."""
        return producer.op in ("conv2d", "linear") and len(self.readers(tensor)) == 1

    def fold_input_layout(self, node: Any, x: Node, target: tuple[int, ...]) -> bool:
        """A Transpose / Reshape that only turns the NHWC network input into NCHW: the input is declared NCHW
        (the file's layout kept in `graph.meta["input_layout"]`) and the op is no tensor of its own."""
        if x.op != "input" or len(x.shape) != 4 or any(x.name in n.inputs for n in self.ir):
            return False
        n, h, w, c = x.shape
        if tuple(target) != (n, c, h, w) or self.readers(x.name) != [node]:
            return False
        x.shape = x.attrs["shape"] = (n, c, h, w)
        self.ir.meta["input_layout"] = "NHWC"
        self.tensor_node[node.output[0]] = x.name
        return True

    # ---- ops ---------------------------------------------------------------------------------------
    def run(self) -> Graph:
        g = self.model.graph
        init = set(self.consts)
        for vi in g.input:
            if vi.name in init:
                continue
            dims = _dims(vi)
            if self.input_shape is not None:
                dims = list(self.input_shape)
            dims = [1 if (i == 0 and not isinstance(d, int)) or (i == 0 and d == 0) else d for i, d in enumerate(dims)]
            if not dims or any(not isinstance(d, int) or d <= 0 for d in dims):
                raise OnnxImportError(
                    f"{self.path}: graph input '{vi.name}' has shape {dims}; give a static shape with "
                    "network.input_shape=[1,C,H,W]"
                )
            elem = {2: 1, 3: 1, 4: 2, 5: 2}.get(vi.type.tensor_type.elem_type)  # uint8/int8/uint16/int16 inputs
            node = self.ir.add(vi.name, "input", (), {"shape": tuple(dims)}, block=0, elem_bytes=elem)
            self.tensor_node[vi.name] = node.name
        if not self.ir.inputs:
            raise OnnxImportError(f"{self.path}: the graph has no (non-initializer) input")
        self.check_ssa()
        for node in g.node:
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None or node.domain not in ("", "ai.onnx"):
                err = self.fail(
                    node,
                    f"op type '{node.op_type}'{' (domain ' + node.domain + ')' if node.domain else ''} is not "
                    f"supported by tinyflow's ONNX importer; supported: {', '.join(SUPPORTED)}",
                )
                raise UnsupportedOpError(str(err), node.op_type)
            try:
                handler(node)
            except TinyflowError:
                raise
            except Exception as exc:  # a malformed node: name it, never "cannot build the network from its config"
                raise self.fail(node, f"cannot be read ({type(exc).__name__}: {str(exc)[:160]})") from None
        outs = []
        for o in g.output:
            if o.name in self.pending_tr:  # a transposed graph output is a real transpose
                self.src(g.node[-1], o.name)
            if o.name not in self.tensor_node:
                raise OnnxImportError(f"{self.path}: graph output '{o.name}' is not computed from the input")
            outs.append(self.tensor_node[o.name])
        self.ir.set_outputs(list(dict.fromkeys(outs)))
        assign_blocks(self.ir)
        self.keep_quantization()
        return self.ir

    def keep_quantization(self) -> None:
        """`graph.quant` for the IR's tensors and weights only; `graph.constants` for every weight of a QDQ model."""
        import onnx

        weights = {name for n in self.ir for name in n.weights.values()}
        self.ir.quant = {k: q for k, q in self.ir.quant.items() if k in self.ir.nodes or k in weights}
        if not any(k in weights for k in self.ir.quant):  # a float model: nothing quantized to carry
            return
        self.ir.constants = {name: np.asarray(self.consts[name]) for name in sorted(weights) if name in self.consts}
        g = self.model.graph
        int8 = onnx.TensorProto.INT8
        first_in = next(vi for vi in g.input if vi.name not in self.consts)
        self.ir.meta["int8_io"] = [
            first_in.type.tensor_type.elem_type == int8,
            bool(g.output) and g.output[0].type.tensor_type.elem_type == int8,
        ]

    def qparams(self, node: Any, values: np.ndarray | None = None) -> QuantParams:
        """The scale / zero point (per tensor or per channel) of a QuantizeLinear or DequantizeLinear; `values`:
        the constant it dequantizes (an axis past a 1-D bias's rank, a converter's fault, is its axis 0)."""
        scale = np.asarray(self.consts[node.input[1]], np.float64)
        has_zp = len(node.input) > 2 and node.input[2] in self.consts
        zp = np.asarray(self.consts[node.input[2]]) if has_zp else np.zeros(1, np.int8)
        axis = int(_attrs(node).get("axis", 1))
        if values is not None and values.ndim:
            axis = axis % values.ndim if axis < 0 else min(axis, values.ndim - 1)
        dtype = str(values.dtype) if values is not None else str(zp.dtype)
        try:
            return QuantParams.of(scale, zp, axis, dtype)
        except InvalidQuantizationError as exc:
            raise self.fail(node, f"tensor '{node.input[0]}': {exc}") from None

    def record_activation(self, ir_name: str, node: Any) -> None:
        """The quantization of an IR tensor, from the first Q (or, for an int8 input, DQ) on it."""
        if node.input[1] in self.consts and ir_name not in self.ir.quant:
            self.ir.quant[ir_name] = self.qparams(node)

    def check_ssa(self) -> None:
        """Every tensor has one producer (ONNX graphs are in SSA form); a second one is an import error."""
        g = self.model.graph
        producer: dict[str, str] = {vi.name: "graph input" for vi in g.input}
        producer.update({name: "initializer" for name in self.consts})
        for node in g.node:
            for out in node.output:
                if not out:
                    continue
                if out in producer:
                    raise self.fail(
                        node,
                        f"writes tensor '{out}', which {producer[out]} already produces; an ONNX graph assigns "
                        "each tensor once (SSA). Re-export the model, or run onnx.checker.check_model on it",
                    )
                producer[out] = f"node '{node.name or node.op_type}'"

    def op_Constant(self, node: Any) -> None:
        from onnx import numpy_helper

        a = {x.name: x for x in node.attribute}
        if "value" not in a:
            raise self.fail(node, "only Constant with a tensor `value` is supported")
        self.consts[node.output[0]] = numpy_helper.to_array(a["value"].t)
        self.const_name[node.output[0]] = node.output[0]

    def pending(self, x: str, out: str) -> bool:
        """Carry a folded Pad or a not yet materialized Transpose through a pass-through node."""
        if x in self.pending_pad:
            self.pending_pad[out] = self.pending_pad[x]
            return True
        if x in self.pending_tr:
            self.pending_tr[out] = self.pending_tr[x]
            return True
        return False

    def _passthrough(self, node: Any) -> None:
        x = node.input[0]
        if x in self.consts:
            self.consts[node.output[0]] = self.consts[x]
            self.const_name[node.output[0]] = self.const_name[x]
        elif not self.pending(x, node.output[0]):
            self.tensor_node[node.output[0]] = self.src(node, x).name

    op_Identity = _passthrough
    op_Dropout = _passthrough

    def op_QuantizeLinear(self, node: Any) -> None:
        x = node.input[0]
        if x in self.consts:
            self.consts[node.output[0]] = self.consts[x]
            self.const_name[node.output[0]] = self.const_name[x]
            return
        if x in self.pending_tr:
            x = self.pending_tr[x][0]
            self.pending(node.input[0], node.output[0])
        elif self.pending(x, node.output[0]):
            return
        producer = self.src(node, x)
        self.record_activation(producer.name, node)
        zp_bytes = 1
        if len(node.input) > 2 and node.input[2] in self.consts:
            zp_bytes = self.consts[node.input[2]].dtype.itemsize
        producer.elem_bytes = zp_bytes  # the tensor is stored quantized
        if node.output[0] not in self.pending_tr:
            self.tensor_node[node.output[0]] = producer.name

    def op_DequantizeLinear(self, node: Any) -> None:
        x = node.input[0]
        if x in self.consts:  # a quantized weight: keep its name, dequantize the value
            scale = self.consts.get(node.input[1], np.array(1.0))
            zp = self.consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            axis = _attrs(node).get("axis", 1)
            self.consts[node.output[0]] = dequantize(self.consts[x], scale, zp, axis).astype(np.float32)
            self.const_name[node.output[0]] = self.const_name[x]
            if node.input[1] in self.consts:
                self.ir.quant[self.const_name[x]] = self.qparams(node, np.asarray(self.consts[x]))
            return
        if x in self.pending_tr:  # an int8 input read through a layout change: the quantization is its base's
            self.record_activation(self.src(node, self.pending_tr[x][0]).name, node)
        elif x not in self.pending_pad:
            self.record_activation(self.src(node, x).name, node)
        if not self.pending(x, node.output[0]):
            self.tensor_node[node.output[0]] = self.src(node, x).name

    def op_Pad(self, node: Any) -> None:
        """A zero Pad that only convolutions read folds into their padding (TF-converted models)."""
        a = _attrs(node)
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        pads = [int(v) for v in self.const(node, node.input[1], "pads").tolist()] if len(node.input) > 1 else []
        value = 0.0
        if len(node.input) > 2 and node.input[2]:
            value = float(np.asarray(self.const(node, node.input[2], "constant_value")).reshape(-1)[0])
        if len(node.input) > 3 and node.input[3]:
            raise self.fail(node, "Pad with an `axes` input is not supported")
        readers = self.readers(node.output[0])
        if mode != "constant" or value != 0.0 or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)):
            raise self.fail(node, f"only a zero, spatial Pad is supported (mode {mode}, value {value}, pads {pads})")
        if not readers or any(r is None or r.op_type != "Conv" for r in readers):
            raise self.fail(node, "a Pad is supported only when convolutions alone read its output")
        self.src(node, node.input[0])
        self.pending_pad[node.output[0]] = (node.input[0], (pads[2], pads[3], pads[6], pads[7]))

    def op_Conv(self, node: Any) -> None:
        a = _attrs(node)
        pre_pad = (0, 0, 0, 0)
        if node.input[0] in self.pending_pad:
            src, pre_pad = self.pending_pad[node.input[0]]
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise self.fail(node, "a Pad before a Conv with auto_pad is not supported")
            x = self.src(node, src)
        else:
            x = self.src(node, node.input[0])
        w = self.const(node, node.input[1], "weight")
        if w.ndim != 4:
            raise self.fail(node, f"only 2-D convolutions are supported (weight shape {list(w.shape)})")
        kh, kw = int(w.shape[2]), int(w.shape[3])
        strides = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        pads = tuple(a.get("pads", (0, 0, 0, 0)))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = self._same_pads(x.shape[2:], (kh, kw), strides, dil, upper=auto == "SAME_UPPER")
        elif auto == "VALID":
            pads = (0, 0, 0, 0)
        weights = {"weight": self.const_name[node.input[1]]}
        if len(node.input) > 2 and node.input[2]:
            self.const(node, node.input[2], "bias")
            weights["bias"] = self.const_name[node.input[2]]
        attrs = {
            "out_channels": int(w.shape[0]),
            "in_channels": int(w.shape[1]) * int(a.get("group", 1)),
            "kernel": (kh, kw),
            "stride": (int(strides[0]), int(strides[1])),
            "padding": tuple(int(pads[i]) + pre_pad[i] for i in range(4)),
            "groups": int(a.get("group", 1)),
            "dilation": (int(dil[0]), int(dil[1])),
            "act": None,
        }
        if any(pre_pad):
            attrs["explicit_pad"] = pre_pad
        self.add(node, "conv2d", [x.name], attrs, weights)

    @staticmethod
    def _same_pads(hw: tuple, k: tuple, s: tuple, d: tuple, upper: bool) -> tuple[int, int, int, int]:
        begin, end = [], []
        for size, kk, ss, dd in zip(hw, k, s, d):
            out = math.ceil(size / ss)
            total = max(0, (out - 1) * ss + (kk - 1) * dd + 1 - size)
            small, big = total // 2, total - total // 2
            begin.append(small if upper else big)
            end.append(big if upper else small)
        return begin[0], begin[1], end[0], end[1]

    def _linear(self, node: Any, x: Node, w: np.ndarray, w_name: str, transposed: bool, bias: str | None) -> None:
        if len(x.shape) != 2:
            raise self.fail(node, f"a linear layer needs a flat (N, F) input, got shape {list(x.shape)}")
        if w.ndim != 2:
            raise self.fail(node, f"weight '{w_name}' must be 2-D, got shape {list(w.shape)}")
        out_f, in_f = (w.shape[0], w.shape[1]) if transposed else (w.shape[1], w.shape[0])
        weights = {"weight": w_name}
        if bias:
            weights["bias"] = bias
        attrs = {"out_features": int(out_f), "in_features": int(in_f), "act": None, "weight_transposed": transposed}
        self.add(node, "linear", [x.name], attrs, weights)

    def op_Gemm(self, node: Any) -> None:
        a = _attrs(node)
        if a.get("transA", 0):
            raise self.fail(node, "Gemm with transA=1 is not supported")
        x = self.src(node, node.input[0])
        w = self.const(node, node.input[1], "weight")
        bias = None
        if len(node.input) > 2 and node.input[2]:
            self.const(node, node.input[2], "bias")
            bias = self.const_name[node.input[2]]
        self._linear(node, x, w, self.const_name[node.input[1]], bool(a.get("transB", 0)), bias)

    def op_MatMul(self, node: Any) -> None:
        x = self.src(node, node.input[0])
        w = self.const(node, node.input[1], "right operand")
        self._linear(node, x, w, self.const_name[node.input[1]], False, None)

    def _binary(self, node: Any, op: str) -> None:
        a, b = node.input[0], node.input[1]
        ca, cb = a in self.consts, b in self.consts
        if ca and cb:
            shape = np.broadcast_shapes(np.shape(self.consts[a]), np.shape(self.consts[b]))
            if math.prod(shape) > MAX_FOLDED_ELEMENTS:
                raise self.fail(
                    node,
                    f"folding its two constant inputs would make a {list(shape)} tensor ({math.prod(shape):,} "
                    f"elements; tinyflow folds constants up to {MAX_FOLDED_ELEMENTS:,}). A model for a "
                    "microcontroller has no such constant: export the network with its constants folded.",
                )
            self.consts[node.output[0]] = (
                np.add(self.consts[a], self.consts[b]) if op == "add" else np.multiply(self.consts[a], self.consts[b])
            )
            self.const_name[node.output[0]] = node.output[0]
            return
        if ca or cb:
            x_name, c_name = (b, a) if ca else (a, b)
            x = self.src(node, x_name)
            if op == "add" and x.op == "linear" and "bias" not in x.weights and self.fusable(x, x_name):
                x.weights["bias"] = self.const_name[c_name]  # MatMul + Add = Gemm
                self.tensor_node[node.output[0]] = x.name
                return
            fn = "add_const" if op == "add" else "mul_const"
            self.add(node, "act", [x.name], {"fn": fn}, {"constant": self.const_name[c_name]})
            return
        self.add(node, op, [self.src(node, a).name, self.src(node, b).name], {})

    def op_Add(self, node: Any) -> None:
        self._binary(node, "add")

    def op_Mul(self, node: Any) -> None:
        self._binary(node, "mul")

    def op_Concat(self, node: Any) -> None:
        ins = [self.src(node, i).name for i in node.input]
        self.add(node, "concat", ins, {"axis": int(_attrs(node).get("axis", 1))})

    def _act(self, node: Any, fn: str, extra: dict | None = None) -> None:
        x_name = node.input[0]
        x = self.src(node, x_name)
        residual = x.op == "add" and len(self.readers(x_name)) == 1  # TFLite's ADD with a fused activation
        if x.attrs.get("act") is None and (self.fusable(x, x_name) or residual):
            x.attrs["act"] = fn
            if extra:
                x.attrs["act_params"] = extra
            self.tensor_node[node.output[0]] = x.name
            return
        self.add(node, "act", [x.name], {"fn": fn, **({"act_params": extra} if extra else {})})

    def op_Relu(self, node: Any) -> None:
        self._act(node, "relu")

    def op_HardSwish(self, node: Any) -> None:
        self._act(node, "hardswish")

    def op_Sigmoid(self, node: Any) -> None:
        self._act(node, "sigmoid")

    def op_Tanh(self, node: Any) -> None:
        self._act(node, "tanh")

    def op_LeakyRelu(self, node: Any) -> None:
        self._act(node, "leakyrelu", {"alpha": float(_attrs(node).get("alpha", 0.01))})

    def op_Softmax(self, node: Any) -> None:
        x = self.src(node, node.input[0])
        self.add(node, "act", [x.name], {"fn": "softmax", "axis": int(_attrs(node).get("axis", -1))})

    def op_HardSigmoid(self, node: Any) -> None:
        a = _attrs(node)
        self._act(node, "hardsigmoid", {"alpha": float(a.get("alpha", 0.2)), "beta": float(a.get("beta", 0.5))})

    def op_Clip(self, node: Any) -> None:
        lo = float(self.const(node, node.input[1], "min")) if len(node.input) > 1 and node.input[1] else None
        hi = float(self.const(node, node.input[2], "max")) if len(node.input) > 2 and node.input[2] else None
        if lo == 0.0 and hi == 6.0:
            self._act(node, "relu6")
        elif lo == 0.0 and hi is None:
            self._act(node, "relu")
        else:
            self._act(node, "clip", {"min": lo, "max": hi})

    def op_BatchNormalization(self, node: Any) -> None:
        x_name = node.input[0]
        x = self.src(node, x_name)
        for t in node.input[1:5]:
            self.const(node, t, "batch-norm parameter")
        roles = dict(zip(("bn_scale", "bn_bias", "bn_mean", "bn_var"), (self.const_name[t] for t in node.input[1:5])))
        eps = float(_attrs(node).get("epsilon", 1e-5))
        if x.op == "conv2d" and x.attrs.get("act") is None and "bn_scale" not in x.weights and self.fusable(x, x_name):
            x.weights.update(roles)
            x.attrs["bn_eps"] = eps
            self.tensor_node[node.output[0]] = x.name
            return
        self.add(node, "batchnorm", [x.name], {"eps": eps}, roles)

    def _pool(self, node: Any, op: str) -> None:
        a = _attrs(node)
        if a.get("ceil_mode", 0):
            raise self.fail(node, "ceil_mode=1 pooling is not supported")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise self.fail(node, "auto_pad pooling is not supported; give explicit pads")
        k = tuple(int(v) for v in a["kernel_shape"])
        attrs = {
            "kernel": k,
            "stride": tuple(int(v) for v in a.get("strides", (1, 1))),
            "padding": tuple(int(v) for v in a.get("pads", (0, 0, 0, 0))),
        }
        self.add(node, op, [self.src(node, node.input[0]).name], attrs)

    def op_MaxPool(self, node: Any) -> None:
        if len(node.output) > 1 and node.output[1]:
            raise self.fail(node, "MaxPool with an Indices output is not supported")
        self._pool(node, "maxpool")

    def op_AveragePool(self, node: Any) -> None:
        self._pool(node, "avgpool")
        self.ir.nodes[self.tensor_node[node.output[0]]].attrs["count_include_pad"] = int(
            _attrs(node).get("count_include_pad", 0)
        )

    def op_GlobalAveragePool(self, node: Any) -> None:
        self.add(node, "global_avgpool", [self.src(node, node.input[0]).name], {})

    def op_ReduceMean(self, node: Any) -> None:
        a = _attrs(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node, node.input[1], "axes").tolist()
        x = self.src(node, node.input[0])
        if sorted(int(v) % 4 for v in (axes or [])) != [2, 3] or len(x.shape) != 4:
            raise self.fail(node, f"only ReduceMean over the spatial axes [2, 3] is supported (axes {axes})")
        ir_node = self.add(node, "global_avgpool", [x.name], {})
        if not a.get("keepdims", 1):
            n, c = ir_node.shape[:2]
            flat = self.ir.add(ir_node.name + ".squeeze", "reshape", [ir_node.name], {"shape": (n, c)})
            self.bind(node.output[0], flat)

    def op_Flatten(self, node: Any) -> None:
        self.add(node, "flatten", [self.src(node, node.input[0]).name], {"axis": int(_attrs(node).get("axis", 1))})

    def _squeeze(self, node: Any, squeeze: bool) -> None:
        x_name = node.input[0]
        axes = _attrs(node).get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node, node.input[1], "axes").tolist()
        if x_name in self.consts:
            c = self.consts[x_name]
            self.consts[node.output[0]] = (
                np.squeeze(c, tuple(axes) if axes else None) if squeeze else np.expand_dims(c, tuple(axes))
            )
            self.const_name[node.output[0]] = node.output[0]
            return
        x = self.src(node, x_name)
        shape = list(x.shape)
        if squeeze:
            drop = {int(a) % len(shape) for a in axes} if axes else {i for i, d in enumerate(shape) if d == 1}
            target = [d for i, d in enumerate(shape) if i not in drop]
        else:
            target = shape
            for a in sorted(int(v) % (len(shape) + len(axes)) for v in axes):
                target.insert(a, 1)
        if tuple(target) == tuple(x.shape):
            self.tensor_node[node.output[0]] = x.name
            return
        self.add(node, "reshape", [x.name], {"shape": tuple(target)})

    def op_Squeeze(self, node: Any) -> None:
        self._squeeze(node, True)

    def op_Unsqueeze(self, node: Any) -> None:
        self._squeeze(node, False)

    def op_Transpose(self, node: Any) -> None:
        x = node.input[0]
        perm = _attrs(node).get("perm")
        if x in self.consts:
            self.consts[node.output[0]] = np.transpose(self.consts[x], perm)
            self.const_name[node.output[0]] = node.output[0]
            return
        # two transposes in a row compose (and cancel when they are inverse)
        base, p0 = self.pending_tr.get(x, (x, None))
        src = self.src(node, base)
        p0 = p0 if p0 is not None else tuple(range(len(src.shape)))
        perm = tuple(int(v) for v in (perm if perm is not None else reversed(range(len(p0)))))
        combined = tuple(p0[p] for p in perm)
        if combined == tuple(range(len(combined))):
            self.tensor_node[node.output[0]] = src.name
            return
        if self.fold_input_layout(node, src, tuple(src.shape[p] for p in combined)):
            return
        self.pending_tr[node.output[0]] = (base, combined)

    def op_Reshape(self, node: Any) -> None:
        tr = self.pending_tr.get(node.input[0])
        if tr is not None and tr[1] == (0, 2, 3, 1):  # NCHW -> NHWC, then flatten: a view read in NHWC order
            x = self.src(node, tr[0])
            target = [int(v) for v in self.const(node, node.input[1], "shape").tolist()]
            if -1 in target:
                known = math.prod(d for d in target if d != -1)
                target[target.index(-1)] = math.prod(x.shape) // max(known, 1)
            if len(target) < 4:
                self.add(node, "reshape", [x.name], {"shape": tuple(target), "nhwc": True})
                return
        x = self.src(node, node.input[0])
        target = [int(v) for v in self.const(node, node.input[1], "shape").tolist()]
        allowzero = _attrs(node).get("allowzero", 0)
        target = [x.shape[i] if (d == 0 and not allowzero) else d for i, d in enumerate(target)]
        if target.count(-1) > 1:
            raise self.fail(node, f"reshape target {target} has more than one -1")
        if -1 in target:
            known = math.prod(d for d in target if d != -1)
            target[target.index(-1)] = math.prod(x.shape) // max(known, 1)
        if tuple(target) == tuple(x.shape):  # an identity reshape passes through
            self.tensor_node[node.output[0]] = x.name
            return
        order_kept = len(x.shape) == 4 and (x.shape[3] == 1 or x.shape[1] * x.shape[2] == 1)  # NHWC, C or HW = 1
        if order_kept and self.fold_input_layout(node, x, tuple(target)):
            return
        self.add(node, "reshape", [x.name], {"shape": tuple(target)})


def from_onnx(path: str | Path, input_shape: tuple[int, ...] | list[int] | None = None) -> Graph:
    """Import the ONNX model at `path` into the IR. `input_shape` overrides a symbolic input shape."""
    model = _load(path)
    graph = _Importer(model, str(path), tuple(input_shape) if input_shape else None).run()
    graph.validate()
    return graph
