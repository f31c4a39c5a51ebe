"""Import a TFLite flatbuffer (int8 or float) into the network IR: `network=tflite network.path=model.tflite`.

Read with the `tflite` schema package (`tinyflow.ir.tflite_file`); no TensorFlow at run time. Operators:
CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, MUL, AVERAGE_POOL_2D, MAX_POOL_2D, MEAN (over H and W), PAD /
PADV2, RESHAPE, SQUEEZE, CONCATENATION, SOFTMAX, LOGISTIC, TANH, RELU, RELU6, QUANTIZE, DEQUANTIZE, TRANSPOSE (a
layout change on the NCHW network input folded into it, any other a `transpose` node); fused RELU /
RELU6 / RELU_N1_TO_1 / TANH activations. Anything else (SVDF, LSTM, a custom op, ...) is one error naming the op
and its operator index.

As the ONNX importer does (the IR of a `.tflite` and of its tf2onnx `.onnx` are the same):
- NHWC tensors become NCHW IR shapes; the network input records its file layout (`graph.meta["input_layout"]`).
- a zero PAD read only by convolutions folds into their padding (the conv keeps it as `explicit_pad`);
- a RESHAPE / SQUEEZE that does not change the NCHW shape is no node; one that does is a view (`nhwc: true`
  when it reorders a 4-D NHWC tensor, which the executor honours).
- every activation tensor keeps its element size (`elem_bytes`: 1 for int8) and quantization (`graph.quant`, see
  `tinyflow.ir.quant`: scale and zero point per tensor or per channel, a channel axis in NCHW); weights are named
  `t<index>:<tensor name>`, their stored integers are `graph.constants` in the ONNX importer's layout (a conv's
  OHWI and a depthwise's 1HWO weight as OIHW, `weight_layout` naming the file's), their quantization
  `graph.quant` (the axis moved with the layout), so lowering reads both formats alike; the flash of the
  model's constants is counted from the real buffers (`graph.meta["weights_flash_bytes"]`),
  the file's size is `graph.meta["file_bytes"]` (what TF Lite Micro keeps in flash).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from tinyflow.errors import TinyflowError
from tinyflow.ir.blocks import assign_blocks
from tinyflow.ir.graph import Graph, Node
from tinyflow.ir.model_errors import ModelImportError, UnsupportedOpError
from tinyflow.ir.ops import IRError
from tinyflow.ir.quant import InvalidQuantizationError, QuantParams
from tinyflow.ir.tflite_file import TfliteModel, TfliteOperator, TfliteTensor, read_tflite

SUPPORTED = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "ADD",
    "MUL",
    "AVERAGE_POOL_2D",
    "MAX_POOL_2D",
    "MEAN",
    "PAD",
    "PADV2",
    "RESHAPE",
    "SQUEEZE",
    "CONCATENATION",
    "SOFTMAX",
    "LOGISTIC",
    "TANH",
    "RELU",
    "RELU6",
    "QUANTIZE",
    "DEQUANTIZE",
    "TRANSPOSE",
)
#: TFLite ActivationFunctionType -> IR activation name
_FUSED = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh"}
_INT_TYPES = {"int8", "uint8", "int16"}
#: a 4-D tensor's NHWC axis -> its NCHW axis
_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}
#: a weight's file layout -> the permutation to the IR's OIHW
TO_OIHW = {"OHWI": (0, 3, 1, 2), "1HWO": (3, 0, 1, 2)}


def nchw(shape: tuple[int, ...]) -> tuple[int, ...]:
    """An NHWC shape as the IR's NCHW (other ranks unchanged)."""
    return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else tuple(shape)


def same_pads(hw: tuple[int, int], k: tuple[int, int], s: tuple[int, int], d: tuple[int, int]) -> tuple[int, ...]:
    """TensorFlow's SAME padding as (top, left, bottom, right): the odd pixel goes to the bottom / right."""
    begin, end = [], []
    for size, kk, ss, dd in zip(hw, k, s, d):
        out = math.ceil(size / ss)
        total = max(0, (out - 1) * ss + (kk - 1) * dd + 1 - size)
        begin.append(total // 2)
        end.append(total - total // 2)
    return begin[0], begin[1], end[0], end[1]


class _Importer:
    def __init__(self, model: TfliteModel, require_int8: bool):
        self.m = model
        self.path = model.path
        self.require_int8 = require_int8
        self.ir = Graph(Path(model.path).stem)
        self.node_of: dict[int, str] = {}  # tensor index -> IR node producing it
        self.pending_pad: dict[int, tuple[int, tuple[int, int, int, int]]] = {}  # PAD output -> (input, t/l/b/r)
        self.readers: dict[int, list[TfliteOperator]] = {}
        for op in model.operators:
            for t in op.inputs:
                if t >= 0:
                    self.readers.setdefault(t, []).append(op)
        self.weight_names: dict[str, int] = {}
        self.flash = 0

    # ---- helpers ------------------------------------------------------------------------------------
    def fail(self, op: TfliteOperator, msg: str) -> ModelImportError:
        return ModelImportError(f"{self.path}: operator {op.index} ({op.op}): {msg}")

    def t(self, index: int) -> TfliteTensor:
        return self.m.tensors[index]

    def src(self, op: TfliteOperator, index: int) -> Node:
        if index in self.pending_pad:
            raise self.fail(op, f"reads the output of a PAD that only convolutions may read (tensor {index})")
        name = self.node_of.get(index)
        if name is None:
            what = "a constant" if self.t(index).data is not None else "not computed by an earlier operator"
            raise self.fail(op, f"input tensor {index} ('{self.t(index).name}') is {what}; an activation is needed")
        return self.ir.nodes[name]

    def const(self, op: TfliteOperator, pos: int, what: str) -> TfliteTensor:
        if pos >= len(op.inputs) or op.inputs[pos] < 0:
            raise self.fail(op, f"has no {what} input")
        t = self.t(op.inputs[pos])
        if t.data is None:
            raise self.fail(op, f"its {what} (tensor {t.index} '{t.name}') must be a constant stored in the file")
        return t

    def weight(self, t: TfliteTensor, layout: str | None = None) -> str:
        """The IR name of a constant tensor; counts its flash once (data + one 4-byte scale per channel) and keeps
        its values (`layout`: the file's weight layout, stored as OIHW) and quantization."""
        name = f"t{t.index}:{t.name}"
        if name not in self.weight_names:
            self.weight_names[name] = t.index
            n_scales = len(t.scale) if t.scale is not None and t.type_name in _INT_TYPES else 0
            self.flash += int(t.data.nbytes) + 4 * n_scales if t.data is not None else 0
            self.keep_constant(name, t, TO_OIHW.get(layout or ""))
        return name

    def keep_constant(self, name: str, t: TfliteTensor, perm: tuple[int, ...] | None) -> None:
        """`graph.constants[name]` (transposed by `perm`) and `graph.quant[name]` (its axis moved with it)."""
        if t.data is None:
            return
        value = np.asarray(t.data)
        axis = t.quantized_dimension
        if perm is not None and value.ndim == len(perm):
            value = np.ascontiguousarray(value.transpose(perm))
            axis = perm.index(axis)
        axis = min(axis, max(value.ndim - 1, 0))  # a depthwise's 1-D bias names the weight's channel axis (3)
        self.ir.constants[name] = value
        if t.scale is not None and len(t.scale):
            zp = t.zero_point if t.zero_point is not None and len(t.zero_point) else 0
            self._set_quant(name, t, zp, axis)

    def _set_quant(self, name: str, t: TfliteTensor, zp: Any, axis: int | None) -> None:
        """`graph.quant[name]`; a tensor whose scales are all 0 carries no quantization (converters write that for
        unquantized tensors), any other unusable scale is one paragraph naming the tensor."""
        if not np.any(np.asarray(t.scale, np.float64)):
            return
        try:
            self.ir.quant[name] = QuantParams.of(t.scale, zp, axis, t.type_name)
        except InvalidQuantizationError as exc:
            raise ModelImportError(f"{self.path}: tensor '{t.name}': {exc}") from None

    def check_int8(self, op: TfliteOperator, t: TfliteTensor, what: str) -> None:
        if self.require_int8 and t.type_name not in _INT_TYPES:
            raise ModelImportError(
                f"network.path: '{self.path}' is a {t.type_name} model (operator {op.index} {op.op}: its {what} "
                f"'{t.name}' is {t.type_name}), but network.require_int8=true needs an int8-quantized model. "
                "Convert it with tf.lite.TFLiteConverter, optimizations=[tf.lite.Optimize.DEFAULT], a "
                "representative_dataset and target_spec.supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS_INT8], "
                "or set network.require_int8=false."
            )

    def add(
        self,
        op: TfliteOperator,
        kind: str,
        inputs: list[str],
        attrs: dict[str, Any],
        weights: dict[str, str] | None = None,
        out: int | None = None,
    ) -> Node:
        out_index = op.outputs[0] if out is None else out
        t = self.t(out_index)
        name = self.unique(t.name or f"{op.op.lower()}_{op.index}")
        try:
            node = self.ir.add(name, kind, inputs, attrs, block=0, weights=weights, elem_bytes=t.elem_bytes)
        except IRError as exc:
            raise ModelImportError(f"{self.path}: operator {op.index} ({op.op}): {exc}") from None
        self.bind(op, out_index, node)
        return node

    def bind(self, op: TfliteOperator, index: int, node: Node) -> None:
        t = self.t(index)
        want = nchw(t.shape)
        if t.shape and tuple(node.shape) != want:
            raise self.fail(op, f"tinyflow infers output shape {list(node.shape)}, the file gives {list(want)} (NCHW)")
        self.node_of[index] = node.name
        self.record_quant(node.name, t)

    def record_quant(self, name: str, t: TfliteTensor) -> None:
        """`graph.quant` of an activation (a per-channel axis of a 4-D NHWC tensor moved to NCHW)."""
        if t.scale is not None and len(t.scale):
            axis = _NCHW_AXIS[t.quantized_dimension] if len(t.shape) == 4 else t.quantized_dimension
            zp = t.zero_point if t.zero_point is not None and len(t.zero_point) else 0
            self._set_quant(name, t, zp, axis)

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.ir.nodes:
            k += 1
            name = f"{base}_{k}"
        return name

    def fused(self, op: TfliteOperator) -> str | None:
        code = int(op.options.get("FusedActivationFunction", 0))
        if code not in _FUSED:
            raise self.fail(op, f"fused activation {code} (SIGN_BIT) is not supported")
        return _FUSED[code]

    # ---- the walk ------------------------------------------------------------------------------------
    def run(self) -> Graph:
        m = self.m
        if not m.inputs:
            raise ModelImportError(f"{self.path}: subgraph 0 has no input tensor")
        for index in m.inputs:
            t = self.t(index)
            if any(d <= 0 for d in t.shape) or not t.shape:
                raise ModelImportError(
                    f"{self.path}: input tensor '{t.name}' has shape {list(t.shape)}; give a "
                    "model with a static input shape"
                )
            node = self.ir.add(
                self.unique(t.name or "input"), "input", (), {"shape": nchw(t.shape)}, elem_bytes=t.elem_bytes
            )
            self.node_of[index] = node.name
            self.record_quant(node.name, t)
        if len(m.inputs) == 1 and len(self.t(m.inputs[0]).shape) == 4:
            self.ir.meta["input_layout"] = "NHWC"
        for op in m.operators:
            handler = getattr(self, f"op_{op.op}", None)
            if handler is None:
                raise UnsupportedOpError(
                    f"network.path: '{self.path}': operator {op.index} is {op.op}, which tinyflow's TFLite importer "
                    f"does not read (supported: {', '.join(SUPPORTED)}). Re-export the model without it, or plan "
                    "the part before it.",
                    op.op,
                )
            try:
                handler(op)
            except TinyflowError:
                raise
            except Exception as exc:  # a malformed operator: name it
                raise self.fail(op, f"cannot be read ({type(exc).__name__}: {str(exc)[:160]})") from None
        outs = []
        for index in m.outputs:
            if index not in self.node_of:
                raise ModelImportError(f"{self.path}: output tensor {index} is not computed from the input")
            outs.append(self.node_of[index])
        self.ir.set_outputs(list(dict.fromkeys(outs)))
        assign_blocks(self.ir)
        self.ir.meta.update(
            {
                "tflite_path": self.path,
                "file_bytes": m.file_bytes,
                "weights_flash_bytes": self.flash,
                "int8_io": [self.t(m.inputs[0]).type_name == "int8", self.t(m.outputs[0]).type_name == "int8"],
                "weights": dict(self.weight_names),
                "tflite_counts": {"tensors": len(m.tensors), "operators": len(m.operators)},
            }
        )
        return self.ir

    # ---- ops -----------------------------------------------------------------------------------------
    def _conv(self, op: TfliteOperator, depthwise: bool) -> None:
        x_index = op.inputs[0]
        pre = (0, 0, 0, 0)
        if x_index in self.pending_pad:
            x_index, pre = self.pending_pad[x_index]
        x = self.src(op, x_index)
        self.check_int8(op, self.t(x_index), "input")
        w = self.const(op, 1, "weight")
        self.check_int8(op, w, "weight")
        o = op.options
        if len(w.shape) != 4 or len(x.shape) != 4:
            raise self.fail(op, f"needs a 4-D input and weight, got {list(x.shape)} and {list(w.shape)}")
        kh, kw = int(w.shape[1]), int(w.shape[2])
        stride = (int(o.get("StrideH", 1)), int(o.get("StrideW", 1)))
        dil = (int(o.get("DilationHFactor", 1) or 1), int(o.get("DilationWFactor", 1) or 1))
        cin = x.shape[1]
        if depthwise:
            cout, groups = int(w.shape[3]), cin
        else:
            cout = int(w.shape[0])
            if cin % int(w.shape[3]):
                raise self.fail(op, f"weight in-channels {w.shape[3]} do not divide the input's {cin}")
            groups = cin // int(w.shape[3])
        hw = (x.shape[2] + pre[0] + pre[2], x.shape[3] + pre[1] + pre[3])
        pads = same_pads(hw, (kh, kw), stride, dil) if int(o.get("Padding", 1)) == 0 else (0, 0, 0, 0)
        layout = "1HWO" if depthwise else "OHWI"
        weights = {"weight": self.weight(w, layout)}
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            weights["bias"] = self.weight(self.const(op, 2, "bias"))
        attrs = {
            "out_channels": cout,
            "in_channels": cin,
            "kernel": (kh, kw),
            "stride": stride,
            "padding": tuple(int(pads[i]) + pre[i] for i in range(4)),
            "groups": groups,
            "dilation": dil,
            "act": self.fused(op),
            "weight_layout": layout,  # the file's; graph.constants holds it as OIHW
        }
        if any(pre):
            attrs["explicit_pad"] = pre
        self.add(op, "conv2d", [x.name], attrs, weights)

    def op_CONV_2D(self, op: TfliteOperator) -> None:
        self._conv(op, depthwise=False)

    def op_DEPTHWISE_CONV_2D(self, op: TfliteOperator) -> None:
        self._conv(op, depthwise=True)

    def op_FULLY_CONNECTED(self, op: TfliteOperator) -> None:
        x = self.src(op, op.inputs[0])
        self.check_int8(op, self.t(op.inputs[0]), "input")
        w = self.const(op, 1, "weight")
        self.check_int8(op, w, "weight")
        if len(w.shape) != 2:
            raise self.fail(op, f"weight shape {list(w.shape)} is not 2-D")
        out_f, in_f = int(w.shape[0]), int(w.shape[1])
        if len(x.shape) != 2:  # TFLite flattens the input to (N, in_f) itself: a view
            n = math.prod(x.shape) // in_f
            nhwc = len(x.shape) == 4 and x.shape[2] * x.shape[3] > 1 and x.shape[1] > 1
            node = self.ir.add(
                self.unique(x.name + ".flatten"),
                "reshape",
                [x.name],
                {"shape": (n, in_f), **({"nhwc": True} if nhwc else {})},
                elem_bytes=x.elem_bytes,
            )
            x = node
        weights = {"weight": self.weight(w)}
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            weights["bias"] = self.weight(self.const(op, 2, "bias"))
        attrs = {"out_features": out_f, "in_features": in_f, "act": self.fused(op), "weight_transposed": True}
        self.add(op, "linear", [x.name], attrs, weights)

    def _binary(self, op: TfliteOperator, kind: str) -> None:
        ins = [i for i in op.inputs if i >= 0]
        consts = [i for i in ins if self.t(i).data is not None]
        act = self.fused(op)
        if len(consts) == 1 and len(ins) == 2:
            x = self.src(op, next(i for i in ins if i not in consts))
            c = self.t(consts[0])
            attrs = {"fn": f"{kind}_const", **({"then": act} if act else {})}
            self.add(op, "act", [x.name], attrs, {"constant": self.weight(c)})
            return
        if consts:
            raise self.fail(op, "both operands are constants")
        self.add(op, kind, [self.src(op, i).name for i in ins], {"act": act} if act else {})

    def op_ADD(self, op: TfliteOperator) -> None:
        self._binary(op, "add")

    def op_MUL(self, op: TfliteOperator) -> None:
        self._binary(op, "mul")

    def _pool(self, op: TfliteOperator, kind: str) -> None:
        x = self.src(op, op.inputs[0])
        o = op.options
        k = (int(o["FilterHeight"]), int(o["FilterWidth"]))
        s = (int(o.get("StrideH", 1)), int(o.get("StrideW", 1)))
        pads = same_pads(tuple(x.shape[2:4]), k, s, (1, 1)) if int(o.get("Padding", 1)) == 0 else (0, 0, 0, 0)
        attrs: dict[str, Any] = {"kernel": k, "stride": s, "padding": pads}
        if kind == "avgpool":
            attrs["count_include_pad"] = 0  # TF Lite averages over the window's real pixels
        if self.fused(op):
            attrs["act"] = self.fused(op)
        self.add(op, kind, [x.name], attrs)

    def op_AVERAGE_POOL_2D(self, op: TfliteOperator) -> None:
        self._pool(op, "avgpool")

    def op_MAX_POOL_2D(self, op: TfliteOperator) -> None:
        self._pool(op, "maxpool")

    def op_MEAN(self, op: TfliteOperator) -> None:
        x = self.src(op, op.inputs[0])
        axes = sorted(int(a) % 4 for a in np.asarray(self.const(op, 1, "axes").data).reshape(-1))
        if len(x.shape) != 4 or axes != [1, 2]:
            raise self.fail(op, f"only MEAN over the spatial axes [1, 2] (NHWC) is supported (axes {axes})")
        out = self.t(op.outputs[0])
        if len(out.shape) == 4:
            self.add(op, "global_avgpool", [x.name], {})
            return
        pooled = self.ir.add(self.unique(out.name + ".pool"), "global_avgpool", [x.name], {}, elem_bytes=out.elem_bytes)
        self.record_quant(pooled.name, out)  # the pooled map is the MEAN's output before its reshape: same values
        self.add(op, "reshape", [pooled.name], {"shape": nchw(out.shape)})

    def op_PAD(self, op: TfliteOperator) -> None:
        pads = np.asarray(self.const(op, 1, "paddings").data).reshape(-1, 2).tolist()
        x_t = self.t(op.inputs[0])
        x = self.src(op, op.inputs[0])
        if len(pads) != 4 or any(pads[0]) or any(pads[3]):
            raise self.fail(op, f"only spatial padding of a 4-D NHWC tensor is supported (paddings {pads})")
        tlbr = (int(pads[1][0]), int(pads[2][0]), int(pads[1][1]), int(pads[2][1]))
        value = 0.0
        if len(op.inputs) > 2 and op.inputs[2] >= 0:  # PADV2: the constant value, in the output's quantization
            c = self.const(op, 2, "constant value")
            zp = int(x_t.zero_point[0]) if x_t.zero_point is not None else 0
            value = float(np.asarray(c.data).reshape(-1)[0]) - (zp if c.type_name in _INT_TYPES else 0)
        readers = self.readers.get(op.outputs[0], [])
        if value == 0.0 and readers and all(r.op in ("CONV_2D", "DEPTHWISE_CONV_2D") for r in readers):
            if op.outputs[0] in self.m.outputs:
                raise self.fail(op, "a PAD that is a graph output is not supported")
            self.pending_pad[op.outputs[0]] = (op.inputs[0], tlbr)
            return
        self.add(op, "pad", [x.name], {"padding": tlbr, "value": value})

    op_PADV2 = op_PAD

    def _view(self, op: TfliteOperator) -> None:
        if self.t(op.inputs[0]).data is not None:  # a reshape of a constant is that constant
            self.set_const(op, np.asarray(self.t(op.inputs[0]).data).reshape(self.t(op.outputs[0]).shape))
            return
        x = self.src(op, op.inputs[0])
        out = self.t(op.outputs[0])
        target = nchw(out.shape)
        if math.prod(target) != math.prod(x.shape):
            raise self.fail(op, f"cannot reshape {list(x.shape)} to {list(target)}")
        if tuple(target) == tuple(x.shape):  # a layout-only reshape: no node
            self.bind(op, op.outputs[0], x)
            return
        spatial = lambda s: len(s) == 4 and s[2] * s[3] > 1 and s[1] > 1  # noqa: E731
        attrs: dict[str, Any] = {"shape": tuple(target)}
        if spatial(x.shape) or spatial(target):
            attrs["nhwc"] = True
        self.add(op, "reshape", [x.name], attrs)

    op_RESHAPE = _view
    op_SQUEEZE = _view

    def op_CONCATENATION(self, op: TfliteOperator) -> None:
        ins = [self.src(op, i) for i in op.inputs]
        rank = len(ins[0].shape)
        axis = int(op.options.get("Axis", -1)) % rank
        if rank == 4:
            axis = {0: 0, 1: 2, 2: 3, 3: 1}[axis]
        attrs: dict[str, Any] = {"axis": axis}
        if self.fused(op):
            attrs["act"] = self.fused(op)
        self.add(op, "concat", [x.name for x in ins], attrs)

    def _act(self, op: TfliteOperator, fn: str, extra: dict[str, Any] | None = None) -> None:
        """A stand-alone activation; fused into a conv / linear / residual add that nothing else reads, as the ONNX
        importer fuses the same op after tf2onnx (so both give one IR)."""
        x_index = op.inputs[0]
        x = self.src(op, x_index)
        only_reader = len(self.readers.get(x_index, [])) == 1 and x_index not in self.m.outputs
        if only_reader and x.op in ("conv2d", "linear", "add") and x.attrs.get("act") is None:
            x.attrs["act"] = fn
            if extra:
                x.attrs["act_params"] = extra
            x.elem_bytes = self.t(op.outputs[0]).elem_bytes
            self.ir.quant.pop(x.name, None)
            self.bind(op, op.outputs[0], x)  # the stored tensor is the activation's output
            return
        self.add(op, "act", [x.name], {"fn": fn, **(extra or {})})

    def op_SOFTMAX(self, op: TfliteOperator) -> None:
        x = self.src(op, op.inputs[0])
        beta = float(op.options.get("Beta", 1.0))
        attrs: dict[str, Any] = {"fn": "softmax", "axis": 1 if len(x.shape) == 4 else -1}
        if beta != 1.0:
            attrs["act_params"] = {"beta": beta}
        self.add(op, "act", [x.name], attrs)

    def op_LOGISTIC(self, op: TfliteOperator) -> None:
        self._act(op, "sigmoid")

    def op_TANH(self, op: TfliteOperator) -> None:
        self._act(op, "tanh")

    def op_RELU(self, op: TfliteOperator) -> None:
        self._act(op, "relu")

    def op_RELU6(self, op: TfliteOperator) -> None:
        self._act(op, "relu6")

    def op_TRANSPOSE(self, op: TfliteOperator) -> None:
        """A layout change on the network input (NCHW file input -> NHWC) is folded: the input is declared with the
        file's NCHW shape (`graph.meta["input_layout"] = "NCHW"`). Any other TRANSPOSE is a real `transpose` node,
        its permutation carried from the file's NHWC axes to the IR's NCHW ones — never dropped."""
        perm = tuple(int(v) for v in np.asarray(self.const(op, 1, "perm").data).reshape(-1))
        if self.t(op.inputs[0]).data is not None:  # a transpose of a constant is that constant
            self.set_const(op, np.transpose(np.asarray(self.t(op.inputs[0]).data), perm))
            return
        x = self.src(op, op.inputs[0])
        if self.fold_input_layout(op, x, perm):
            return
        rank = len(perm)
        if rank == 4:  # IR = file.transpose(to_nchw); file_out = file_in.transpose(perm)
            to_nhwc, to_nchw = (0, 2, 3, 1), (0, 3, 1, 2)
            q = [to_nhwc[p] for p in perm]
            perm = tuple(q[i] for i in to_nchw)
        if perm == tuple(range(rank)):
            self.bind(op, op.outputs[0], x)
            return
        self.add(op, "transpose", [x.name], {"perm": perm})

    def fold_input_layout(self, op: TfliteOperator, x: Node, perm: tuple[int, ...]) -> bool:
        """A TRANSPOSE [0, 2, 3, 1] that only turns the NCHW network input into NHWC, as the ONNX importer folds
        its layout transposes: the input node takes the file's shape (already NCHW) and the op is no tensor."""
        index = op.inputs[0]
        readers = [o for o in self.m.operators if index in o.inputs]
        if x.op != "input" or perm != (0, 2, 3, 1) or readers != [op] or any(x.name in n.inputs for n in self.ir):
            return False
        x.shape = x.attrs["shape"] = tuple(self.t(index).shape)
        self.ir.meta["input_layout"] = "NCHW"
        self.bind(op, op.outputs[0], x)
        return True

    def _convert(self, op: TfliteOperator) -> None:
        x = self.src(op, op.inputs[0])
        self.add(op, "convert", [x.name], {"to": self.t(op.outputs[0]).type_name})

    op_QUANTIZE = _convert
    op_DEQUANTIZE = _convert

    # ---- shape arithmetic on static shapes (Keras' Reshape layer): evaluated here, no op at run time
    def set_const(self, op: TfliteOperator, value: np.ndarray) -> None:
        self.t(op.outputs[0]).data = np.asarray(value)

    def op_SHAPE(self, op: TfliteOperator) -> None:
        self.set_const(op, np.asarray(self.t(op.inputs[0]).shape, np.int32))

    def op_STRIDED_SLICE(self, op: TfliteOperator) -> None:
        x, begin, end, strides = (
            np.asarray(self.const(op, i, w).data) for i, w in enumerate(("input", "begin", "end", "strides"))
        )
        o = op.options
        if x.ndim != 1 or o.get("EllipsisMask") or o.get("NewAxisMask"):
            raise self.fail(op, "only a 1-D slice of a constant (a static shape) is supported")
        lo = None if int(o.get("BeginMask", 0)) & 1 else int(begin[0])
        hi = None if int(o.get("EndMask", 0)) & 1 else int(end[0])
        out = x[lo : hi : int(strides[0])]
        self.set_const(op, out[0] if int(o.get("ShrinkAxisMask", 0)) & 1 else out)

    def op_PACK(self, op: TfliteOperator) -> None:
        parts = [np.asarray(self.const(op, i, "value").data) for i in range(len(op.inputs))]
        self.set_const(op, np.stack(parts, axis=int(op.options.get("Axis", 0))))


def from_tflite(path: str | Path, require_int8: bool = False) -> Graph:
    """Import the TFLite model at `path` into the IR. `require_int8`: a float model is an error."""
    model = read_tflite(path)
    graph = _Importer(model, bool(require_int8)).run()
    graph.validate()
    return graph
