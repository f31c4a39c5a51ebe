"""The op-kind registry (`tinyflow.ir.op_registry`): every kind declares all its parts (executor kernel, C lowering,
oracle and C emission per firmware layer kind, receptive-field rule, MAC count), references resolve, missing parts
are declared unsupported with a reason, importing the IR stays torch- and firmware-free; and every plan step
carries a declared kind that codegen and the executor read."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tinyflow.arch import mobilenetv2
from tinyflow.arch.rnnpool import rewrite
from tinyflow.ir import OP_KINDS, Graph, from_arch, get_op
from tinyflow.ir.op_registry import (
    OP_PARTS,
    OPKIND_MACS,
    RF_RULES,
    LayerParts,
    Unsupported,
    UnsupportedPart,
    declared,
    layer_part,
    op_part,
    resolve,
)
from tinyflow.ir.rnnpool import rnnpool_graph
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan
from tinyflow.memory.patch_plan import patch_plan
from tinyflow.memory.rnnpool_plan import rnnpool_plan

SHIPPED = sorted(k for k, v in OP_KINDS.items() if type(v).__module__.startswith("tinyflow."))
CALLABLE_PARTS = ("executor", "lowering", "macs")


def _is_part(ref: object) -> bool:
    return isinstance(ref, Unsupported | str) or callable(ref) or ref is OPKIND_MACS


@pytest.mark.parametrize("op", SHIPPED)
def test_every_kind_declares_all_parts(op: str) -> None:
    """Executor, lowering, oracle, emission, receptive-field rule and MACs: each a reference, a callable or an
    explicit `Unsupported(reason)`; none left out."""
    assert op in OP_PARTS, f"op kind '{op}' declares no parts"
    for part in CALLABLE_PARTS:
        ref = declared(op, part)
        assert _is_part(ref), (op, part, ref)
        if isinstance(ref, Unsupported):
            assert ref.reason
    for part in ("oracle", "emission"):
        refs = declared(op, part)
        if isinstance(refs, Unsupported):
            assert refs.reason
            continue
        assert refs, f"op kind '{op}' lowers to no firmware layer kind"
        for kind, ref in refs.items():
            assert _is_part(ref), (op, kind, part, ref)
    assert declared(op, "receptive_field") in RF_RULES


@pytest.mark.parametrize("op", SHIPPED)
def test_declared_references_resolve(op: str) -> None:
    """Every reference names a real callable (the lowerings need `tinyflow.firmware.lowering`)."""
    for part in CALLABLE_PARTS:
        if not isinstance(declared(op, part), Unsupported):
            assert callable(op_part(op, part)), (op, part)
    layers = declared(op, "layers")
    if not isinstance(layers, Unsupported):
        for kind, lp in layers.items():
            for part in ("oracle", "emission"):
                if not isinstance(getattr(lp, part), Unsupported):
                    assert callable(layer_part(kind, part)), (op, kind, part)


def test_macs_part_is_the_op_kinds_formula() -> None:
    g = from_arch(mobilenetv2(0.35, 64, num_classes=5))
    for node in g:
        if node.op != "input":
            assert op_part(node.op, "macs")(node, g.in_shapes(node), node.shape) == g.node_macs(node)
    assert op_part("transpose", "macs") == get_op("transpose").macs


def test_receptive_field_rules() -> None:
    assert {op for op in SHIPPED if op_part(op, "receptive_field") == "windowed"} == {"conv2d", "maxpool", "avgpool"}
    assert op_part("transpose", "receptive_field") == "barrier"
    assert op_part("add", "receptive_field") == "elementwise"


def test_a_missing_part_is_an_error_with_its_reason() -> None:
    with pytest.raises(UnsupportedPart, match=r"concat.*lowering.*no int8 kernel"):
        op_part("concat", "lowering")
    with pytest.raises(UnsupportedPart, match=r"rnnpool.*emission.*scheduler=rnnpool"):
        layer_part("rnnpool", "emission")
    with pytest.raises(Exception, match=r"declared by no op kind"):
        layer_part("no_such_layer", "oracle")


def test_a_kind_without_parts_is_named() -> None:
    from tinyflow.ir.op_registry import parts_of
    from tinyflow.ir.ops import OpKind, register_op

    @register_op
    class _Undeclared(OpKind):
        name = "test_undeclared_parts"

    with pytest.raises(Exception, match=r"'test_undeclared_parts' declares no parts.*register_parts"):
        parts_of("test_undeclared_parts")
    OP_KINDS.pop("test_undeclared_parts")


def test_references_are_lazy_module_attr_strings() -> None:
    assert resolve("tinyflow.ir.ops:get_op") is get_op
    lp = OP_PARTS["conv2d"].layers
    assert isinstance(lp, dict) and isinstance(lp["pointwise"], LayerParts)
    assert lp["pointwise"].oracle == "tinyflow.firmware.oracle:pointwise"
    assert OP_PARTS["conv2d"].lowering == "tinyflow.firmware.lowering:lower_conv2d"


def test_ir_import_stays_torch_and_firmware_free() -> None:
    code = (
        "import sys\n"
        "import tinyflow.ir, tinyflow.ir.op_registry, tinyflow.memory\n"
        "from tinyflow.ir.op_registry import OP_PARTS, rf_rule\n"
        "assert rf_rule('conv2d') == 'windowed' and 'transpose' in OP_PARTS\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('tinyflow.firmware') "
        "or m.startswith('tinyflow.execute')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- declared step kinds
MEM = MemoryConfig()


def test_planners_declare_their_step_kinds() -> None:
    g = from_arch(mobilenetv2(0.35, 64, num_classes=5))
    assert {s.kind for s in layer_plan(g, MEM).steps} == {"layer"}
    plan = patch_plan(g, MEM, patch_blocks=3, n_patches=2)
    assert {s.kind for s in plan.steps} == {"patch", "layer"}
    assert all((s.kind == "patch") == (s.patch is not None) for s in plan.steps)
    rg = rnnpool_graph(rewrite(mobilenetv2(0.35, 64, num_classes=2), {"stem_channels": 8, "patch": 6, "stride": 4}))
    rplan = rnnpool_plan(rg, MEM)
    assert {s.kind for s in rplan.steps} == {"rnnpool", "layer"}
    assert [s.kind for s in rplan.steps if s.patch is not None] == ["rnnpool"] * (2 * rg["rnnpool"].shape[2] ** 2)


def test_plan_kinds_survive_to_dict_and_back() -> None:
    from tinyflow.memory.plan import ExecutionPlan

    plan = patch_plan(from_arch(mobilenetv2(0.35, 64, num_classes=5)), MEM, patch_blocks=3, n_patches=2)
    back = ExecutionPlan.from_dict(plan.to_dict())
    assert [s.kind for s in back.steps] == [s.kind for s in plan.steps]


def test_codegen_names_a_step_kind_it_does_not_run() -> None:
    from tinyflow.firmware.codegen import step_kind
    from tinyflow.firmware.qmodel import FirmwareError

    step = layer_plan(from_arch(mobilenetv2(0.35, 32, num_classes=2)), MEM).steps[0]
    assert step_kind(step) == "layer"
    step.kind = "tiled"  # a new scheduler's steps: refused by name, never guessed from their shape
    with pytest.raises(FirmwareError, match=r"kind 'tiled'.*does not run"):
        step_kind(step)
    step.kind, step.patch = "layer", (0, 0)  # a patch step of a plan saved before steps declared kinds
    with pytest.raises(FirmwareError, match=r"kind 'layer' and patch \(0, 0\).*Plan the model again"):
        step_kind(step)


def test_a_new_kind_is_patchable_by_its_declared_rule() -> None:
    from tinyflow.ir.op_registry import register_parts
    from tinyflow.ir.ops import OpKind, register_op
    from tinyflow.memory.receptive_field import max_patch_blocks

    @register_op
    class _Scale(OpKind):
        name = "test_scale"
        alias = "inplace"

        def shape(self, node, inputs):  # type: ignore[no-untyped-def]
            return inputs[0]

    none = Unsupported("a test kind")
    g = Graph("g")
    g.add("x", "input", (), {"shape": (1, 3, 8, 8)})
    g.add("c", "conv2d", ("x",), {"out_channels": 4, "kernel": (3, 3), "padding": (1, 1, 1, 1)}, block=0)
    g.add("s", "test_scale", ("c",), block=1)
    g.add("p", "global_avgpool", ("s",), block=2)
    try:
        for rule, blocks in (("elementwise", 2), ("barrier", 1)):
            register_parts("test_scale", OP_PARTS["act"].__class__(none, none, none, rule, OPKIND_MACS))
            assert max_patch_blocks(g) == blocks
    finally:
        OP_KINDS.pop("test_scale")
        OP_PARTS.pop("test_scale")
