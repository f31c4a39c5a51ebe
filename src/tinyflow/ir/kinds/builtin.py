"""The parts of the op kinds of `tinyflow.ir.ops` and of `rnnpool` (`tinyflow.ir.rnnpool`), declared once.

References are lazy (``"module:attr"``): the executor kernels live in `tinyflow.execute.kernels` (torch), the
lowerings in `tinyflow.firmware.lowering`, the oracles in `tinyflow.firmware.oracle`, the C emissions in
`tinyflow.firmware.codegen`; importing this module imports none of them.
"""

from __future__ import annotations

from tinyflow.ir.op_registry import OPKIND_MACS, LayerParts, OpParts, Unsupported, register_parts

_EXEC = "tinyflow.execute.kernels:"
_LOWER = "tinyflow.firmware.lowering:"
_ORACLE = "tinyflow.firmware.oracle:"
_EMIT = "tinyflow.firmware.codegen:"

NO_INT8_KERNEL = "the C generator has no int8 kernel for it; replace the op or deploy with backend=onnxruntime"


def _layer(kind: str, patch: bool = False) -> LayerParts:
    return LayerParts(f"{_ORACLE}{kind}", f"{_EMIT}emit_{kind}", patch)


def _declare(
    op: str, lowering: str | Unsupported, layers: dict[str, LayerParts] | Unsupported, rf: str, executor: bool = True
) -> None:
    ex = f"{_EXEC}run_{op}" if executor else Unsupported("the PyTorch executor does not run it")
    register_parts(op, OpParts(ex, lowering, layers, rf, OPKIND_MACS))


_declare(
    "conv2d",
    f"{_LOWER}lower_conv2d",
    {"conv": _layer("conv", True), "pointwise": _layer("pointwise", True), "depthwise": _layer("depthwise", True)},
    "windowed",
)
_declare("maxpool", f"{_LOWER}lower_maxpool", {"maxpool": _layer("maxpool")}, "windowed")
_declare("avgpool", f"{_LOWER}lower_avgpool", {"avgpool": _layer("avgpool")}, "windowed")
_declare("linear", f"{_LOWER}lower_linear", {"linear": _layer("linear")}, "barrier")
_declare("add", f"{_LOWER}lower_add", {"add": _layer("add", True)}, "elementwise")
_declare("global_avgpool", f"{_LOWER}lower_global_avgpool", {"global_avgpool": _layer("global_avgpool")}, "barrier")
_declare("act", f"{_LOWER}lower_act", {"act": _layer("act"), "softmax": _layer("softmax")}, "elementwise")
_declare("flatten", f"{_LOWER}lower_flatten", {"view": _layer("view")}, "barrier")
_declare("reshape", f"{_LOWER}lower_reshape", {"view": _layer("view")}, "barrier")
_declare("mul", Unsupported(f"an elementwise product: {NO_INT8_KERNEL}"), Unsupported(NO_INT8_KERNEL), "elementwise")
_declare("concat", Unsupported(f"a concatenation: {NO_INT8_KERNEL}"), Unsupported(NO_INT8_KERNEL), "elementwise")
_declare(
    "batchnorm",
    Unsupported("an unfolded batch norm: fold it into the conv before export"),
    Unsupported(NO_INT8_KERNEL),
    "elementwise",
)
_declare(
    "pad",
    Unsupported("a stand-alone pad: the importers fold zero pads into the conv that reads them"),
    Unsupported(NO_INT8_KERNEL),
    "barrier",
)
_declare(
    "convert",
    Unsupported("a stand-alone (de)quantization: the firmware's input and output are already int8"),
    Unsupported("no integer layer: the firmware's input and output are int8"),
    "barrier",
)
_INPUT = "the network input is fed to the network, not run"
register_parts("input", OpParts(Unsupported(_INPUT), Unsupported(_INPUT), Unsupported(_INPUT), "barrier", OPKIND_MACS))
_RNNPOOL_C = (
    "the firmware runs RNNPool patch by patch as the rnnpool plan lays it out (stem and RNNPool per pooled pixel, "
    "tinyflow.firmware.rnnpool_codegen); a layer or patch plan of an RNNPool network has no C kernel. Plan it with "
    "scheduler=rnnpool"
)
register_parts(
    "rnnpool",
    OpParts(
        Unsupported("the PyTorch executor runs no RNNPool node; tinyflow.nn.rnnpool runs an RNNPool network"),
        Unsupported("lowered with its stem by tinyflow.firmware.rnnpool_model (float32 weights from the file)"),
        {"rnnpool": LayerParts(f"{_ORACLE}rnnpool", Unsupported(_RNNPOOL_C))},
        "barrier",
        OPKIND_MACS,
    ),
)
