"""The C99 model: `model.h` / `model.c` from the integer layers and the ExecutionPlan (layer plans).

One static arena of exactly the plan's `arena_bytes`, every tensor at the plan's offset (views and in-place
depthwise share their input's offset, as the plan says); weights, biases and requantization constants are
`const` arrays (flash); one function per layer calls a kernel of `tf_kernels.h` with constant arguments. The only
other RAM is the depthwise kernel's padded plane (scratch, in .bss, counted in the SRAM figure).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from tinyflow.firmware.qmodel import FirmwareError, QLayer, QModel, hwc
from tinyflow.memory.plan import ExecutionPlan

ARENA = "tf_arena"
PLANE = "tf_plane"


@dataclass
class CSources:
    """The generated files (name -> text) and the figures codegen knows."""

    files: dict[str, str]
    arena_bytes: int
    scratch_bytes: int
    input_bytes: int
    output_bytes: int


def template(name: str) -> str:
    return resources.files("tinyflow.firmware").joinpath("templates", name).read_text()


def c_ident(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", text).strip("_")[:40] or "t"


def c_array(ctype: str, name: str, values: np.ndarray) -> str:
    flat = np.asarray(values).reshape(-1).tolist()
    rows = [", ".join(str(int(v)) for v in flat[i : i + 24]) for i in range(0, len(flat), 24)]
    body = ",\n    ".join(rows) if rows else "0"
    return f"static const {ctype} {name}[{max(1, len(flat))}] = {{\n    {body}\n}};\n"


def check_plan(model: QModel, plan: ExecutionPlan) -> dict[str, Any]:
    """Every tensor of the model placed by the plan, int8-sized, under the liveness rule; offsets by name."""
    if plan.memory.get("rule", "liveness") != "liveness":
        raise FirmwareError(
            f"memory.rule = {plan.memory.get('rule')!r}: that plan lets a tensor kept for later (a residual skip) be "
            "overwritten, so it cannot run as firmware. Plan with memory.rule=liveness."
        )
    if any(s.patch is not None for s in plan.steps):
        raise FirmwareError(
            f"the plan is a {plan.scheduler} plan that runs part of the network patch by patch; the C generator "
            "runs layer plans (scheduler=layer). Use scheduler=layer with backend=c."
        )
    placed = {t.name: t for t in plan.tensors}
    names = [model.input_name, *(layer.name for layer in model.layers)]
    for name in names:
        t = placed.get(name)
        if t is None:
            raise FirmwareError(f"the plan places no tensor '{name}'; the plan is not of this model's graph")
        numel = int(np.prod(model.graph[name].shape))
        if t.size not in (numel, 0) or (t.size == 0 and name != model.input_name):
            raise FirmwareError(
                f"the plan gives tensor '{name}' {t.size} B but it holds {numel} int8 elements; plan the int8 model "
                "(memory.dtype_bytes=1)"
            )
        if t.offset < 0 or t.offset + t.size > plan.arena_bytes:
            raise FirmwareError(f"tensor '{name}' at offset {t.offset} lies outside the plan's arena")
    return placed


def _ptr(placed: dict[str, Any], name: str, input_name: str) -> str:
    t = placed[name]
    if name == input_name and t.size == 0:
        return "tf_input"  # memory.count_input=false: the input is read where it lies
    return f"({ARENA} + {t.offset})"


def _layer_call(layer: QLayer, ident: str, ptr: dict[str, str]) -> tuple[str, str]:
    """(constant arrays, the function body) of one layer."""
    p, kind = layer.p, layer.kind
    x, y = ptr[layer.inputs[0]], ptr[layer.name]
    h, w, c = hwc(layer.in_shapes[0])
    ho, wo, co = hwc(layer.out_shape)
    arrays = ""
    if "weight" in p:
        arrays += c_array("int8_t", f"{ident}_w", p["weight"]) + c_array("int32_t", f"{ident}_b", p["bias"])
    if isinstance(p.get("mult"), np.ndarray):
        arrays += c_array("int32_t", f"{ident}_m", p["mult"]) + c_array("int32_t", f"{ident}_s", p["shift"])
    q = f"{ident}_b, {ident}_m, {ident}_s"
    act = f"{p.get('act_min', -128)}, {p.get('act_max', 127)}"
    if kind == "pointwise":
        call = f"tf_pointwise({x}, {y}, {h * w}, {c}, {co}, {ident}_w, {q}, {p['zp_out']}, {act});"
    elif kind == "linear":
        call = f"tf_pointwise({x}, {y}, 1, {h * w * c}, {co}, {ident}_w, {q}, {p['zp_out']}, {act});"
    elif kind == "conv":
        (kh, kw), (sh, sw), (pt, pl, _, _) = p["kernel"], p["stride"], p["pad"]
        call = (
            f"tf_conv({x}, {y}, {h}, {w}, {c}, {ho}, {wo}, {co}, {kh}, {kw}, {sh}, {sw}, {pt}, {pl}, {ident}_w, {q}, "
            f"{p['zp_in']}, {p['zp_out']}, {act});"
        )
    elif kind == "depthwise":
        (kh, kw), (sh, sw), (pt, pl, pb, pr) = p["kernel"], p["stride"], p["pad"]
        call = (
            f"tf_depthwise({x}, {y}, {h}, {w}, {c}, {ho}, {wo}, {kh}, {kw}, {sh}, {sw}, {pt}, {pl}, {pb}, {pr}, "
            f"{ident}_w, {q}, {p['zp_in']}, {p['zp_out']}, {act}, {PLANE});"
        )
    elif kind == "add":
        y2 = ptr[layer.inputs[1]]
        call = (
            f"tf_add({x}, {y2}, {y}, {h * w * c}, {p['zp1']}, {p['m1']}, {p['sh1']}, {p['zp2']}, {p['m2']}, "
            f"{p['sh2']}, {p['mo']}, {p['sho']}, {p['zp_out']});"
        )
    elif kind == "global_avgpool":
        call = f"tf_global_avgpool({x}, {y}, {h * w}, {c}, {p['zp_in']}, {p['mult']}, {p['shift']}, {p['zp_out']});"
    elif kind == "avgpool":
        (kh, kw), (sh, sw), (pt, pl, _, _) = p["kernel"], p["stride"], p["pad"]
        call = (
            f"tf_avgpool({x}, {y}, {h}, {w}, {c}, {ho}, {wo}, {kh}, {kw}, {sh}, {sw}, {pt}, {pl}, {ident}_m, "
            f"{ident}_s, {p['zp_in']}, {p['zp_out']});"
        )
    elif kind == "maxpool":
        (kh, kw), (sh, sw), (pt, pl, _, _) = p["kernel"], p["stride"], p["pad"]
        call = (
            f"tf_maxpool({x}, {y}, {h}, {w}, {c}, {ho}, {wo}, {kh}, {kw}, {sh}, {sw}, {pt}, {pl}, {p['mult']}, "
            f"{p['shift']}, {p['zp_in']}, {p['zp_out']});"
        )
    elif kind == "act":
        call = f"tf_act({x}, {y}, {h * w * c}, {p['zp_in']}, {p['mult']}, {p['shift']}, {p['zp_out']}, {act});"
    elif kind == "view":
        call = "/* a view: same bytes, same offset as its input */"
    else:
        raise FirmwareError(f"no C kernel for layer kind {kind!r}")
    return arrays, call


def scratch_bytes(model: QModel) -> int:
    """The depthwise kernel's padded plane: the largest (H + pads) × (W + pads) of any depthwise layer."""
    sizes = [0]
    for layer in model.layers:
        if layer.kind == "depthwise":
            h, w, _ = hwc(layer.in_shapes[0])
            pt, pl, pb, pr = layer.p["pad"]
            sizes.append((h + pt + pb) * (w + pl + pr))
    return max(sizes)


def generate(model: QModel, plan: ExecutionPlan) -> CSources:
    """model.h, model.c and tf_kernels.h for a layer plan of the model."""
    placed = check_plan(model, plan)
    in_bytes = int(np.prod(model.input_shape))
    out_bytes = int(np.prod(model.output_shape))
    ptr = {name: _ptr(placed, name, model.input_name) for name in [model.input_name, *(x.name for x in model.layers)]}
    plane = scratch_bytes(model)
    arrays, funcs, calls = [], [], []
    for i, layer in enumerate(model.layers):
        ident = f"L{i:03d}_{c_ident(layer.name)}"
        a, call = _layer_call(layer, ident, ptr)
        arrays.append(a)
        shape = "x".join(str(d) for d in hwc(layer.out_shape))
        funcs.append(
            f"/* {layer.name}: {layer.kind} -> {shape} (HxWxC) */\nstatic void {ident}(void) {{\n    {call}\n}}\n"
        )
        if layer.kind != "view":
            calls.append(f"    {ident}();")
    header = template("model.h.in").format(
        arena=plan.arena_bytes,
        input_bytes=in_bytes,
        output_bytes=out_bytes,
        input_shape="x".join(str(d) for d in hwc(model.input_shape)),
        output_shape="x".join(str(d) for d in hwc(model.output_shape)),
        input_scale=repr(model.input_scale),
        input_zp=model.input_zp,
        output_scale=repr(model.output_scale),
        output_zp=model.output_zp,
        scheduler=plan.scheduler,
        layers=len(calls),
    )
    copy_in = (
        "    (void)tf_input;"
        if placed[model.input_name].size == 0
        else f"    memcpy({ARENA} + {placed[model.input_name].offset}, tf_input, TF_INPUT_BYTES);"
    )
    source = template("model.c.in")
    source = source.replace("@ARENA_BYTES@", str(plan.arena_bytes)).replace("@PLANE_BYTES@", str(max(plane, 1)))
    source = source.replace("@ARRAYS@", "\n".join(a for a in arrays if a))
    source = source.replace("@FUNCTIONS@", "\n".join(funcs)).replace("@COPY_IN@", copy_in)
    source = source.replace("@CALLS@", "\n".join(calls))
    source = source.replace("@COPY_OUT@", f"    memcpy(output, {ptr[model.output_name]}, TF_OUTPUT_BYTES);")
    files = {"model.h": header, "model.c": source, "tf_kernels.h": template("tf_kernels.h")}
    return CSources(files, plan.arena_bytes, plane, in_bytes, out_bytes)
