"""The C99 model: `model.h` / `model.c` from the integer layers and the ExecutionPlan (layer plans).

One static arena of exactly the plan's `arena_bytes`, every tensor at the plan's offset (views and in-place
depthwise share their input's offset, as the plan says); weights, biases and requantization constants are
`const` arrays (flash); one function per layer calls a kernel of `tf_kernels.h` with constant arguments. The only
other RAM is the depthwise kernel's padded plane (scratch, in .bss, counted in the SRAM figure). A layer kind's C
is `emit_<kind>(layer, ident, views, layer_plan)`, declared in `tinyflow.ir.op_registry` (a kind of its own module
declares its emission there); a plan step runs as its declared `Step.kind` says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from tinyflow.firmware.qmodel import FirmwareError, QLayer, QModel, hwc
from tinyflow.ir.op_registry import UnsupportedPart, layer_part, layer_runs_on_patches
from tinyflow.ir.ops import IRError
from tinyflow.memory.plan import ExecutionPlan

ARENA = "tf_arena"
PLANE = "tf_plane"
WIDE = "tf_wide"  # the pointwise kernel's widened inputs (int32 words: two pixels' int16 pairs)


@dataclass
class CSources:
    """The generated files (name -> text) and the figures codegen knows."""

    files: dict[str, str]
    arena_bytes: int
    scratch_bytes: int
    input_bytes: int
    output_bytes: int
    profile_points: list[str] = field(default_factory=list)  # with profile: the layer each counted call runs


def template(name: str) -> str:
    return resources.files("tinyflow.firmware").joinpath("templates", name).read_text()


def c_comment(text: str) -> str:
    """A model file's name as text inside a C comment: printable ASCII on one line, never closing the comment."""
    clean = "".join(ch if " " <= ch <= "~" else "?" for ch in str(text))
    return clean.replace("*/", "*_/").replace("/*", "/_*")[:120]


def c_array(ctype: str, name: str, values: np.ndarray) -> str:
    flat = np.asarray(values).reshape(-1).tolist()
    rows = [", ".join(str(int(v)) for v in flat[i : i + 24]) for i in range(0, len(flat), 24)]
    body = ",\n    ".join(rows) if rows else "0"
    return f"static const {ctype} {name}[{max(1, len(flat))}] = {{\n    {body}\n}};\n"


#: the plan step kinds the C generator runs (`Step.kind`, declared by the planner that made the step)
STEP_KINDS = ("layer", "patch", "rnnpool")


def in_rnnpool_loop(step: Any) -> bool:
    """A step of the rnnpool plan's stem + RNNPool patch loop (its declared kind)."""
    return step.kind == "rnnpool"


def step_kind(step: Any) -> str:
    """The step's declared kind; one the C generator does not run is a `FirmwareError` naming it, and so is a step
    whose kind contradicts its patch (a plan saved before steps declared their kind)."""
    if step.kind not in STEP_KINDS:
        raise FirmwareError(
            f"plan step {step.index} ({step.node}) has kind '{step.kind}', which the C generator does not run; it "
            f"runs {', '.join(STEP_KINDS)} steps"
        )
    if (step.kind == "layer") != (step.patch is None):
        raise FirmwareError(
            f"plan step {step.index} ({step.node}) has kind '{step.kind}' and patch {step.patch}: a layer step runs "
            "the whole tensor, a patch or rnnpool step one patch. Plan the model again."
        )
    return step.kind


def check_plan(model: QModel, plan: ExecutionPlan) -> dict[str, Any]:
    """Every tensor a step reads or writes placed by the plan, int8-sized, under the liveness rule."""
    if plan.memory.get("rule", "liveness") != "liveness":
        raise FirmwareError(
            f"memory.rule = {plan.memory.get('rule')!r}: that plan lets a tensor kept for later (a residual skip) be "
            "overwritten, so it cannot run as firmware. Plan with memory.rule=liveness."
        )
    placed = {t.name: t for t in plan.tensors}
    layers = {layer.name for layer in model.layers}
    for step in plan.steps:
        if step.node not in layers:
            raise FirmwareError(f"the plan runs node '{step.node}', which the model does not have; plan this model")
        for name in [*step.inputs, *step.outputs]:
            t = placed.get(name)
            if t is None:
                raise FirmwareError(f"the plan places no tensor '{name}'; the plan is not of this model's graph")
            if t.offset < 0 or t.offset + t.size > plan.arena_bytes:
                raise FirmwareError(f"tensor '{name}' at offset {t.offset} lies outside the plan's arena")
        out = placed[step.outputs[0]]
        node = model.graph[step.node]
        ho, wo, c = hwc(node.shape)
        kind = step_kind(step)
        if kind == "rnnpool":
            continue  # rnnpool_codegen checks its buffers
        if kind == "patch":
            r0, r1, c0, c1 = step.extra["region"]
            need = (r1 - r0) * (c1 - c0) * c if "@" in out.name else ho * wo * c
        else:
            need = ho * wo * c
        if out.size < need:
            raise FirmwareError(
                f"the plan gives tensor '{out.name}' {out.size} B but step {step.index} writes {need} int8 elements "
                "into it; plan the int8 model (memory.dtype_bytes=1)"
            )
    return placed


def _ptr(placed: dict[str, Any], name: str, input_name: str) -> str:
    t = placed[name]
    if name == input_name and t.size == 0:
        return "tf_input"  # memory.count_input=false: the input is read where it lies
    return f"({ARENA} + {t.offset})"


@dataclass(frozen=True)
class Views:
    """C expressions for a kernel's buffers: input views (pointer, first stored row, column, row stride in
    pixels), the output rectangle (first row, column, rows, columns) and the output view."""

    ins: tuple[tuple[str, ...], ...]
    rect: tuple[str, str, str, str]
    out: tuple[str, str, str, str]


def whole(layer: QLayer, ptr: dict[str, str]) -> Views:
    """A layer plan's views: whole tensors, origins 0, strides = widths."""
    ins = tuple((ptr[name], "0", "0", str(hwc(shape)[1])) for name, shape in zip(layer.inputs, layer.in_shapes))
    ho, wo, _ = hwc(layer.out_shape)
    return Views(ins, ("0", "0", str(ho), str(wo)), (ptr[layer.name], "0", "0", str(wo)))


ACC_BOUND = 1 << 30  # |acc| below it: 2·acc fits int32 (the SMMUL / SMMULR requantization)


def rq_mode(layer: QLayer) -> int:
    """1 when every channel shifts right (shift <= -1) and no accumulator can reach 2^30 (|bias| + 128·Σ|w|, the
    int8 input range): the kernels' short requantization (`tf_rq`) with −shift − 1 stored per channel; else 0."""
    p = layer.p
    if "weight" not in p or not isinstance(p.get("shift"), np.ndarray) or np.any(p["shift"] > -1):
        return 0
    w = np.abs(p["weight"].reshape(len(p["bias"]), -1).astype(np.int64)).sum(axis=1)
    return int(np.all(np.abs(p["bias"].astype(np.int64)) + 128 * w < ACC_BOUND))


#: the layer parameter that turns an im2col conv's row padding off (`set_row_padding`): padding costs flash
ROW_PADDING = "row_padding"


def conv_row(layer: QLayer) -> int:
    """An im2col conv's weight row: kh·kw·cin rounded up to a multiple of 4 when that adds at most 1/8 more MACs
    (the kernel's dot products then need no remainder loop and take the DSP path: 27 -> 28), else kh·kw·cin (9 stays
    9); kh·kw·cin when the generator dropped the padding for want of flash (`set_row_padding`)."""
    k = _taps(layer)
    kp = -(-k // 4) * 4
    return kp if 8 * (kp - k) <= k and layer.p.get(ROW_PADDING, True) else k


def _taps(layer: QLayer) -> int:
    """An im2col conv's unpadded row: kh·kw·cin."""
    (kh, kw), cin = layer.p["kernel"], hwc(layer.in_shapes[0])[2]
    return kh * kw * cin


def row_padding_bytes(model: QModel) -> int:
    """The flash the padded im2col rows cost beside the plain ones: cout · (row − kh·kw·cin) per conv layer."""
    convs = [layer for layer in model.layers if layer.kind == "conv"]
    return sum(int(la.p["weight"].shape[0]) * (conv_row(la) - _taps(la)) for la in convs)


def set_row_padding(model: QModel, on: bool) -> None:
    """Pad the im2col rows (faster, costs `row_padding_bytes` of flash) or not (the kernels' remainder loops)."""
    for layer in model.layers:
        if layer.kind == "conv":
            layer.p[ROW_PADDING] = on


def kernel_weight(layer: QLayer) -> np.ndarray:
    """The weights in the order and length the kernel reads them: an im2col conv's OHWI rows padded with zeros to
    `conv_row` (flash: cout·(kp − k) bytes more); every other kind as lowered."""
    w = layer.p["weight"]
    if layer.kind != "conv":
        return w
    rows = w.reshape(w.shape[0], -1)
    padded = np.zeros((rows.shape[0], conv_row(layer)), np.int8)
    padded[:, : rows.shape[1]] = rows
    return padded


def layer_arrays(layer: QLayer, ident: str) -> str:
    p = layer.p
    arrays = ""
    if "weight" in p:
        arrays += c_array("int8_t", f"{ident}_w", kernel_weight(layer)) + c_array("int32_t", f"{ident}_b", p["bias"])
    if "table" in p:
        arrays += c_array("int32_t", f"{ident}_t", p["table"])
    if isinstance(p.get("mult"), np.ndarray):
        shift = -p["shift"] - 1 if rq_mode(layer) else p["shift"]  # rq = 1 stores the right shift less one
        arrays += c_array("int32_t", f"{ident}_m", p["mult"]) + c_array("int32_t", f"{ident}_s", shift)
    return arrays


def kernel_call(layer: QLayer, ident: str, v: Views, layer_plan: bool) -> str:
    """The kernel call of one layer through the views `v` (constants in a layer plan, parameters in a patch): the
    C emission its kind declares (`tinyflow.ir.op_registry`)."""
    try:
        emit = layer_part(layer.kind, "emission")
    except UnsupportedPart as exc:
        raise FirmwareError(f"layer '{layer.name}' ({layer.kind}): {exc}") from None
    except IRError:
        raise FirmwareError(f"no C kernel for layer kind {layer.kind!r} (layer '{layer.name}')") from None
    if not layer_plan and not layer_runs_on_patches(layer.kind):
        raise FirmwareError(
            f"layer '{layer.name}' ({layer.kind}) is inside the patch stage; the C generator runs convolutions and "
            "adds patch by patch. Choose a smaller scheduler.patch_blocks."
        )
    return emit(layer, ident, v, layer_plan)


def _io(layer: QLayer, v: Views) -> tuple[str, str, tuple[int, int, int], tuple[int, int, int]]:
    """Input and output pointers, input (H, W, C), output (H, W, C)."""
    return v.ins[0][0], v.out[0], hwc(layer.in_shapes[0]), hwc(layer.out_shape)


def _q(ident: str) -> str:
    return f"{ident}_b, {ident}_m, {ident}_s"


def _act(p: dict[str, Any]) -> str:
    return f"{p.get('act_min', -128)}, {p.get('act_max', 127)}"


def _views(v: Views) -> str:
    return f"{', '.join(v.ins[0])}, {v.out[0]}, {', '.join(v.rect)}, {', '.join(v.out[1:])}"


def emit_pointwise(layer: QLayer, ident: str, v: Views, layer_plan: bool) -> str:
    p, (x, y, (h, w, c), (_, _, co)) = layer.p, _io(layer, v)
    rq, wide = rq_mode(layer), (WIDE if c % 4 == 0 else "0")
    if layer_plan:
        return (
            f"tf_pointwise({x}, {y}, {h * w}, {c}, {co}, {ident}_w, {_q(ident)}, {p['zp_out']}, {_act(p)}, {rq}, "
            f"{wide});"
        )
    return f"tf_pointwise_rect({_views(v)}, {c}, {co}, {ident}_w, {_q(ident)}, {p['zp_out']}, {_act(p)}, {rq}, {wide});"


def _windowed(name: str, layer: QLayer, ident: str, v: Views, cout: str) -> str:
    p, (_, _, (h, w, c), _) = layer.p, _io(layer, v)
    (kh, kw), (sh, sw), (pt, pl, _, _) = p["kernel"], p["stride"], p["pad"]
    return (
        f"{name}({_views(v)}, {h}, {w}, {c}, {cout}{kh}, {kw}, {sh}, {sw}, {pt}, {pl}, {ident}_w, {_q(ident)}, "
        f"{p['zp_in']}, {p['zp_out']}, {_act(p)}, {PLANE}, {rq_mode(layer)});"
    )


def emit_conv(layer: QLayer, ident: str, v: Views, layer_plan: bool) -> str:
    kp = conv_row(layer)
    wide = WIDE if kp % 4 == 0 else "0"
    return _windowed("tf_conv", layer, ident, v, f"{hwc(layer.out_shape)[2]}, ")[:-2] + f", {kp}, {wide});"


def emit_depthwise(layer: QLayer, ident: str, v: Views, layer_plan: bool) -> str:
    return _windowed("tf_depthwise", layer, ident, v, "")


def emit_add(layer: QLayer, ident: str, v: Views, layer_plan: bool) -> str:
    p, (x, y, (h, w, c), _) = layer.p, _io(layer, v)
    # |inputs · 2^20| < 2^28, so 2·acc fits int32: per rescale 2 (shift 0: SMMULR alone), 1 (right shift: the short
    # sequence, −shift − 1 passed) or 0 (a left shift: the general one)
    modes = {k: 2 if p[k] == 0 else int(p[k] <= -1) for k in ("sh1", "sh2", "sho")}
    sh1, sh2, sho = (-p[k] - 1 if modes[k] == 1 else p[k] for k in ("sh1", "sh2", "sho"))
    rq = modes["sh1"] + 3 * modes["sh2"] + 9 * modes["sho"]
    add_q = (
        f"{p.get('zp1')}, {p.get('m1')}, {sh1}, {p.get('zp2')}, {p.get('m2')}, {sh2}, "
        f"{p.get('mo')}, {sho}, {p.get('zp_out')}, {rq}"
    )
    if layer_plan:
        return f"tf_add({x}, {v.ins[1][0]}, {y}, {h * w * c}, {add_q});"
    return (
        f"tf_add_rect({', '.join(v.ins[0])}, {', '.join(v.ins[1])}, {y}, {', '.join(v.rect)}, "
        f"{', '.join(v.out[1:])}, {c}, {add_q});"
    )


def emit_linear(layer: QLayer, ident: str, v: Views, layer_plan: bool) -> str:
    p, (x, y, (h, w, c), (_, _, co)) = layer.p, _io(layer, v)
    rq, n = rq_mode(layer), h * w * c
    wide = WIDE if n % 4 == 0 and n <= layer.p.get("wide_words", 0) else "0"  # only in the buffer the model has
    return f"tf_pointwise({x}, {y}, 1, {n}, {co}, {ident}_w, {_q(ident)}, {p['zp_out']}, {_act(p)}, {rq}, {wide});"


def emit_global_avgpool(layer: QLayer, ident: str, v: Views, layer_plan: bool) -> str:
    from tinyflow.firmware.oracle import mean_constants

    p, (x, y, (h, w, c), _) = layer.p, _io(layer, v)
    m, s = mean_constants(p)
    return f"tf_global_avgpool({x}, {y}, {h * w}, {c}, {p['zp_in']}, {m}, {s}, {p['zp_out']}, {_act(p)});"


def _pool_geometry(layer: QLayer, v: Views) -> str:
    p, (x, y, (h, w, c), (ho, wo, _)) = layer.p, _io(layer, v)
    (kh, kw), (sh, sw), (pt, pl, _, _) = p["kernel"], p["stride"], p["pad"]
    return f"{x}, {y}, {h}, {w}, {c}, {ho}, {wo}, {kh}, {kw}, {sh}, {sw}, {pt}, {pl}"


def emit_avgpool(layer: QLayer, ident: str, v: Views, layer_plan: bool) -> str:
    from tinyflow.firmware.oracle import tflite_avgpool

    p, div = layer.p, int(tflite_avgpool(layer.p))
    return (
        f"tf_avgpool({_pool_geometry(layer, v)}, {ident}_m, {ident}_s, {p['zp_in']}, {p['zp_out']}, {_act(p)}, {div});"
    )


def emit_maxpool(layer: QLayer, ident: str, v: Views, layer_plan: bool) -> str:
    p = layer.p
    return f"tf_maxpool({_pool_geometry(layer, v)}, {p['mult']}, {p['shift']}, {p['zp_in']}, {p['zp_out']});"


def emit_act(layer: QLayer, ident: str, v: Views, layer_plan: bool) -> str:
    p, (x, y, (h, w, c), _) = layer.p, _io(layer, v)
    return f"tf_act({x}, {y}, {h * w * c}, {p['zp_in']}, {p['mult']}, {p['shift']}, {p['zp_out']}, {_act(p)});"


def emit_softmax(layer: QLayer, ident: str, v: Views, layer_plan: bool) -> str:
    p, (x, y, (h, w, c), _) = layer.p, _io(layer, v)
    return f"tf_softmax({x}, {y}, {h * w * c}, {ident}_t, INT64_C({p['inv']}), {p['zp_out']});"


def emit_view(layer: QLayer, ident: str, v: Views, layer_plan: bool) -> str:
    return "/* a view: same bytes, same offset as its input */"


def scratch_bytes(rects: list[tuple[QLayer, int, int]]) -> int:
    """The kernels' scratch: the depthwise padded plane ((oh−1)·s + k) × ((ow−1)·s + k), the conv's im2col columns."""
    sizes = [0]
    for layer, oh, ow in rects:
        if layer.kind == "conv":  # im2col of two output pixels
            sizes.append(2 * conv_row(layer))
        if layer.kind == "depthwise":
            (kh, kw), (sh, sw) = layer.p["kernel"], layer.p["stride"]
            sizes.append(((oh - 1) * sh + kh) * ((ow - 1) * sw + kw))
    return max(sizes)


def wide_words(model: QModel) -> int:
    """int32 words of the pointwise kernel's widened inputs: two pixels of the widest pointwise layer whose input
    channels are a multiple of 4, or of an im2col conv's padded row (2·cin int16 = cin words); 0 without one."""
    cins = [hwc(la.in_shapes[0])[2] for la in model.layers if la.kind == "pointwise"]
    cins += [conv_row(la) for la in model.layers if la.kind == "conv"]
    return max([c for c in cins if c % 4 == 0], default=0)


def wide_array(words: int) -> str:
    """The widened-input scratch (used on a DSP core only; the compiler drops it elsewhere)."""
    if not words:
        return ""
    head = "/* scratch of the pointwise kernel: two pixels' inputs widened to int16 pairs (DSP cores) */"
    return f"{head}\nstatic int32_t {WIDE}[{words}] __attribute__((unused));\n"


PATCH_PARAMS = (
    "const int8_t *in, int32_t iy0, int32_t ix0, int32_t is, int8_t *out, int32_t oy0, int32_t ox0, int32_t oh, "
    "int32_t ow, int32_t oyb, int32_t oxb, int32_t os"
)
PATCH_ADD_PARAMS = (
    "const int8_t *in, int32_t iy0, int32_t ix0, int32_t is, const int8_t *in2, int32_t jy0, int32_t jx0, "
    "int32_t js, int8_t *out, int32_t oy0, int32_t ox0, int32_t oh, int32_t ow, int32_t oyb, int32_t oxb, int32_t os"
)


def _patch_function(layer: QLayer, ident: str) -> str:
    ins = [("in", "iy0", "ix0", "is"), ("in2", "jy0", "jx0", "js")][: len(layer.inputs)]
    v = Views(tuple(ins), ("oy0", "ox0", "oh", "ow"), ("out", "oyb", "oxb", "os"))
    params = PATCH_ADD_PARAMS if layer.kind == "add" else PATCH_PARAMS
    call = kernel_call(layer, ident, v, layer_plan=False)
    head = f"/* {c_comment(layer.name)}: {layer.kind}, one patch */"
    return f"{head}\nstatic void P{ident}({params}) {{\n    {call}\n}}\n"


def _patch_call(step: Any, layer: QLayer, ident: str, ptr: dict[str, str], regions: dict[str, tuple]) -> str:
    args = []
    for name, shape in zip(step.inputs, layer.in_shapes):
        if name in regions:  # a per-patch buffer: it holds its producer's region of this patch
            r0, _, c0, c1 = regions[name]
            args += [ptr[name], str(r0), str(c0), str(c1 - c0)]
        else:  # the network input or an assembled tensor: whole
            args += [ptr[name], "0", "0", str(hwc(shape)[1])]
    r0, r1, c0, c1 = step.extra["region"]
    oname = step.outputs[0]
    args += [ptr[oname], str(r0), str(c0), str(r1 - r0), str(c1 - c0)]
    if "@" in oname:  # the patch's own buffer
        regions[oname] = (r0, r1, c0, c1)
        args += [str(r0), str(c0), str(c1 - c0)]
    else:  # the stage output: one whole buffer, each patch writes its region
        args += ["0", "0", str(hwc(layer.out_shape)[1])]
    return f"    P{ident}({', '.join(args)}); /* patch {step.patch[0]},{step.patch[1]} */"


PROFILE_CLOCK = "tf_profile_clock"
COPY_IN, COPY_OUT = "(copy in)", "(copy out)"  # the profile's points that are no layer


def profiled(calls: list[str]) -> str:
    """The calls with the instrumentation between them: the clock (a down-counter the harness provides) read
    once before the first and once after each; `tf_profile[i]` gets call i's ticks."""
    lines = [f"    uint32_t tf_t0 = {PROFILE_CLOCK}(), tf_t1;"]
    for i, call in enumerate(calls):
        lines.append(f"{call}\n    tf_t1 = {PROFILE_CLOCK}(); tf_profile[{i}] = tf_t0 - tf_t1; tf_t0 = tf_t1;")
    return "\n".join(lines)


def profile_header(points: int) -> str:
    """model.h's declarations of the per-call tick counts (only in a profiled build)."""
    return (
        f"\n/* per-layer profile: the ticks of the harness's clock each layer call took, in call order */\n"
        f"#define TF_PROFILE_POINTS {points}\nextern uint32_t tf_profile[TF_PROFILE_POINTS];\n"
        f"uint32_t {PROFILE_CLOCK}(void);\n\n#endif /* TF_MODEL_H */"
    )


def generate(model: QModel, plan: ExecutionPlan, profile: bool = False) -> CSources:
    """model.h, model.c and tf_kernels.h for a plan of the model: layer steps as one function per layer, patch
    steps as one function per op called once per patch with that patch's buffers and region. With `profile`, the
    harness's clock is read between calls into `tf_profile` (the per-layer profile)."""
    placed = check_plan(model, plan)
    in_bytes = int(np.prod(model.input_shape))
    out_bytes = int(np.prod(model.output_shape))
    ptr = {name: _ptr(placed, name, model.input_name) for name in placed}
    layers = {layer.name: layer for layer in model.layers}
    idents = {layer.name: f"L{i:03d}" for i, layer in enumerate(model.layers)}  # names only in comments (c_comment)
    arrays = [layer_arrays(layer, idents[layer.name]) for layer in model.layers]
    wide = wide_words(model)
    for layer in model.layers:  # a classifier widens its input into that buffer when it fits (2·n int16 ≤ words)
        if layer.kind == "linear":
            layer.p["wide_words"] = 2 * wide
    funcs: list[str] = []
    calls: list[str] = []
    points: list[str] = []
    rects: list[tuple[QLayer, int, int]] = []
    regions: dict[str, tuple] = {}
    made: set[str] = set()
    stage = None
    extra_scratch = 0
    for step in plan.steps:
        layer, ident = layers[step.node], idents[step.node]
        if in_rnnpool_loop(step):
            if stage is None:
                from tinyflow.firmware.rnnpool_codegen import rnnpool_stage

                stage = rnnpool_stage(model, plan, placed, ptr, idents)
                arrays.append(stage.arrays)
                funcs.append(stage.function)
                calls.append(stage.call)
                points.append(step.node)
                rects.append((stage.stem, *stage.stem_rect))
                extra_scratch = stage.scratch_bytes
            continue
        if step.kind == "layer":
            ho, wo, _ = hwc(layer.out_shape)
            rects.append((layer, ho, wo))
            call = kernel_call(layer, ident, whole(layer, ptr), layer_plan=True)
            shape = "x".join(str(d) for d in hwc(layer.out_shape))
            head = f"/* {c_comment(layer.name)}: {layer.kind} -> {shape} (HxWxC) */"
            funcs.append(f"{head}\nstatic void {ident}(void) {{\n    {call}\n}}\n")
            if layer.kind != "view":
                calls.append(f"    {ident}();")
                points.append(step.node)
            continue
        if step.node not in made:
            made.add(step.node)
            funcs.append(_patch_function(layer, ident))
        r0, r1, c0, c1 = step.extra["region"]
        rects.append((layer, r1 - r0, c1 - c0))
        calls.append(_patch_call(step, layer, ident, ptr, regions))
        points.append(step.node)
    plane = scratch_bytes(rects)
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
        layers=len(funcs),
    )
    copy_in = (
        "    (void)tf_input;"
        if placed[model.input_name].size == 0
        else f"    memcpy({ARENA} + {placed[model.input_name].offset}, tf_input, TF_INPUT_BYTES);"
    )
    source = template("model.c.in")
    source = source.replace("@ARENA_BYTES@", str(plan.arena_bytes)).replace("@PLANE_BYTES@", str(max(plane, 1)))
    source = source.replace("static const int8_t *tf_input;", f"{wide_array(wide)}static const int8_t *tf_input;")
    source = source.replace("@ARRAYS@", "\n".join(a for a in arrays if a))
    source = source.replace("@FUNCTIONS@", "\n".join(funcs))
    copy_out = f"    memcpy(output, {ptr[model.output_name]}, TF_OUTPUT_BYTES);"
    if profile:  # the copies are points too, so the profile's sum is the whole inference less the clock reads
        calls, points = [copy_in, *calls, copy_out], [COPY_IN, *points, COPY_OUT]
        copy_in = copy_out = ""
        header = header.replace("\n#endif /* TF_MODEL_H */", profile_header(len(calls)))
        run = "int tf_model_run(const int8_t *input"
        source = source.replace(run, f"uint32_t tf_profile[{len(calls)}];\n\n{run}")
    source = source.replace("@COPY_IN@", copy_in).replace("@COPY_OUT@", copy_out)
    source = source.replace("@CALLS@", profiled(calls) if profile else "\n".join(calls))
    single = model.rounding == "single"
    source = source.replace("@ROUNDING@", f"#define TF_SINGLE_ROUNDING {int(single)} /* requantization rounding */")
    files = {"model.h": header, "model.c": source, "tf_kernels.h": template("tf_kernels.h")}
    if stage is not None:
        files["tf_rnnpool.h"] = template("tf_rnnpool.h")
    scratch = plane + 4 * wide + extra_scratch
    return CSources(files, plan.arena_bytes, scratch, in_bytes, out_bytes, points if profile else [])
