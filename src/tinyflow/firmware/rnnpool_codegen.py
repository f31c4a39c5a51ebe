"""C for the RNNPool stage of an `rnnpool` plan: the stem conv and RNNPool, patch by patch, as the plan lays it out.

For every pooled pixel (oy, ox), row-major — the plan's steps 2p (stem on patch p) and 2p+1 (rnnpool on patch
p) — the stem kernel computes only the stem pixels under the patch into the plan's patch buffer (`<stem>.patch`),
whose pixels outside the stem map hold the stem's zero point (RNNPool's zero padding); then `tf_rnnpool_patch`
(templates/tf_rnnpool.h) pools the patch in float32 on the FPU and writes its 4·h2 int8 values into the pooled
output at the plan's offset. With `memory.count_input: false` the input rows and columns under the patch are first
copied from the caller's input into the plan's `<input>.patch` buffer. The RNN weights are `const float` arrays
(flash, exact hex literals); the RNN's float scratch is a static array outside the arena (counted in
`scratch_bytes`), since the plan sizes its `<rnnpool>.scratch` slot for int8 elements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyflow.firmware.codegen import Views, c_comment, kernel_call
from tinyflow.firmware.qmodel import FirmwareError, QLayer, QModel, hwc
from tinyflow.memory.plan import ExecutionPlan

SCRATCH = "tf_rnn_scratch"
CELL_CODES = {"fastgrnn": "TF_FASTGRNN", "gru": "TF_GRU"}


@dataclass
class RNNPoolStage:
    """The generated pieces: constants, the stage function, its call, its float scratch and the stem's rect."""

    arrays: str
    function: str
    call: str
    scratch_bytes: int
    stem: QLayer
    stem_rect: tuple[int, int]


def c_float(value: float) -> str:
    """A float32 value as an exact C hex literal."""
    v = float(np.float32(value))
    return f"{v.hex()}f" if np.isfinite(v) else "0.0f"


def c_float_array(name: str, values: np.ndarray) -> str:
    flat = [c_float(v) for v in np.asarray(values, np.float32).reshape(-1)]
    rows = [", ".join(flat[i : i + 8]) for i in range(0, len(flat), 8)]
    body = ",\n    ".join(rows) or "0.0f"
    return f"static const float {name}[{max(1, len(flat))}] = {{\n    {body}\n}};\n"


def _cell(ident: str, cell: dict[str, Any], in_size: int) -> str:
    b1, b2 = ("b_z", "b_h") if cell["cell"] == "fastgrnn" else ("b_i", "b_h")
    text = c_float_array(f"{ident}_w", cell["w"]) + c_float_array(f"{ident}_u", cell["u"])
    text += c_float_array(f"{ident}_b1", cell[b1]) + c_float_array(f"{ident}_b2", cell[b2])
    zeta, nu = c_float(cell.get("zeta", 0.0)), c_float(cell.get("nu", 0.0))
    text += (
        f"static const tf_rnn_cell {ident} = {{{CELL_CODES[cell['cell']]}, {in_size}, {cell['hidden']}, {ident}_w, "
        f"{ident}_u, {ident}_b1, {ident}_b2, {zeta}, {nu}}};\n"
    )
    return text


def scratch_floats(layer: QLayer, f: int) -> int:
    """Floats of `tf_rnnpool_patch`'s scratch: summaries, RNN2's state, one pixel, one step's two products."""
    (r, c), h1, h2 = layer.p["patch"], layer.p["rnn1"]["hidden"], layer.p["rnn2"]["hidden"]
    g = 3 if layer.p["rnn1"]["cell"] == "gru" else 1
    return (r + c) * h1 + h2 + max(f, h1) + 2 * g * max(h1, h2)


def _span(start: int, size: int, limit: int) -> tuple[int, int]:
    return max(start, 0), min(start + size, limit)


def check_loop(plan: ExecutionPlan, stem: QLayer, pool: QLayer) -> None:
    """The plan's patch loop is the one the C runs: stem then rnnpool for each pooled pixel, row-major, over the
    stem rows and columns the plan names."""
    (r, c), (sr, sc), (pr, pc) = pool.p["patch"], pool.p["stride"], pool.p["padding"]
    ho, wo = pool.p["pooled_hw"]
    hs, ws, _ = hwc(stem.out_shape)
    loop = [s for s in plan.steps if s.kind == "rnnpool"]
    if len(loop) != 2 * ho * wo:
        raise FirmwareError(f"the rnnpool plan runs {len(loop)} patch steps; the C loop runs {2 * ho * wo}")
    for i, (oy, ox) in enumerate((y, x) for y in range(ho) for x in range(wo)):
        s_stem, s_pool = loop[2 * i], loop[2 * i + 1]
        spans = [list(_span(oy * sr - pr, r, hs)), list(_span(ox * sc - pc, c, ws))]
        stem_ok = s_stem.node == stem.name and [s_stem.extra.get("stem_rows"), s_stem.extra.get("stem_cols")] == spans
        if not (stem_ok and s_pool.node == pool.name and tuple(s_stem.patch) == tuple(s_pool.patch) == (oy, ox)):
            raise FirmwareError(
                f"the rnnpool plan's steps {s_stem.index}, {s_pool.index} are not the stem and RNNPool of patch "
                f"({oy}, {ox}) over stem rows {spans[0]} and columns {spans[1]}; plan this model with scheduler=rnnpool"
            )


def _buffer(placed: dict[str, Any], name: str, need: int) -> str:
    t = placed.get(name)
    if t is None or t.size < need:
        got = "none" if t is None else f"{t.size} B"
        raise FirmwareError(f"the rnnpool plan gives buffer '{name}' {got}; the stage needs {need} B")
    return f"(tf_arena + {t.offset})"


def rnnpool_stage(
    model: QModel, plan: ExecutionPlan, placed: dict[str, Any], ptr: dict[str, str], idents: dict[str, str]
) -> RNNPoolStage:
    """The constants, the loop function and its call for the plan's stem + RNNPool patch loop."""
    pool = next(layer for layer in model.layers if layer.kind == "rnnpool")
    stem = next(layer for layer in model.layers if layer.name == pool.inputs[0])
    check_loop(plan, stem, pool)
    p = pool.p
    (r, c), (sr, sc), (pr, pc) = p["patch"], p["stride"], p["padding"]
    ho, wo = p["pooled_hw"]
    hs, ws, f = hwc(stem.out_shape)
    h, w, cin = hwc(stem.in_shapes[0])
    h2 = p["rnn2"]["hidden"]
    first = next(s for s in plan.steps if s.node == stem.name and s.kind == "rnnpool")
    patch = _buffer(placed, first.outputs[0], r * c * f)
    out = _buffer(placed, pool.name, ho * wo * 4 * h2)
    ident, sid = idents[pool.name], idents[stem.name]
    streamed = first.inputs[0] != model.input_name
    region = ""
    if streamed:  # memory.count_input=false: the input under the patch, copied into the plan's buffer
        (kh, kw), (sh, sw), (pt, pl, _, _) = stem.p["kernel"], stem.p["stride"], stem.p["pad"]
        rbuf = _buffer(placed, first.inputs[0], 1)
        region = (
            f"                const int32_t iy0 = tf_imax(y0 * {sh} - {pt}, 0);\n"
            f"                const int32_t iy1 = tf_imin((y1 - 1) * {sh} - {pt} + {kh}, {h});\n"
            f"                const int32_t ix0 = tf_imax(x0 * {sw} - {pl}, 0);\n"
            f"                const int32_t ix1 = tf_imin((x1 - 1) * {sw} - {pl} + {kw}, {w});\n"
            f"                for (int32_t yy = iy0; yy < iy1; yy++)\n"
            f"                    memcpy({rbuf} + (yy - iy0) * (ix1 - ix0) * {cin},\n"
            f"                           tf_input + (yy * {w} + ix0) * {cin}, (size_t)((ix1 - ix0) * {cin}));\n"
        )
        src = (rbuf, "iy0", "ix0", "(ix1 - ix0)")
    else:
        src = (ptr[model.input_name], "0", "0", str(w))
    views = Views((src,), ("y0", "x0", "(y1 - y0)", "(x1 - x0)"), (patch, "top", "left", str(c)))
    stem_call = kernel_call(stem, sid, views, layer_plan=False)
    n_scratch = scratch_floats(pool, f)
    quant = f"{p['zp_in']}, {c_float(p['scale_in'])}, {c_float(p['scale_out'])}, {p['zp_out']}"
    names = f"{c_comment(stem.name)} + {c_comment(pool.name)}"
    function = f"""/* {names}: the plan's patch loop. For each of the {ho}x{wo} pooled pixels the stem
 * computes only the stem pixels under its {r}x{c} patch (the zero point elsewhere: RNNPool's zero padding), then
 * RNNPool pools the patch in float32 into its {4 * h2} int8 outputs. */
static void {ident}_stage(void) {{
    for (int32_t oy = 0; oy < {ho}; oy++) {{
        const int32_t top = oy * {sr} - {pr};
        const int32_t y0 = tf_imax(top, 0), y1 = tf_imin(top + {r}, {hs});
        for (int32_t ox = 0; ox < {wo}; ox++) {{
            const int32_t left = ox * {sc} - {pc};
            const int32_t x0 = tf_imax(left, 0), x1 = tf_imin(left + {c}, {ws});
            if (y1 - y0 < {r} || x1 - x0 < {c}) memset({patch}, {stem.p["zp_out"]}, {r * c * f});
            if (y1 > y0 && x1 > x0) {{
{region}                {stem_call}
            }}
            tf_rnnpool_patch({patch}, {r}, {c}, {f}, &{ident}_rnn1, &{ident}_rnn2, {quant},
                             {out} + (oy * {wo} + ox) * {4 * h2}, {SCRATCH});
        }}
    }}
}}
"""
    arrays = '#include "tf_rnnpool.h"\n'
    arrays += "/* float32 scratch of the RNN cells (outside the arena; the plan sizes its slot for int8) */\n"
    arrays += f"static float {SCRATCH}[{n_scratch}];\n"
    arrays += _cell(f"{ident}_rnn1", p["rnn1"], f) + _cell(f"{ident}_rnn2", p["rnn2"], p["rnn1"]["hidden"])
    return RNNPoolStage(arrays, function, f"    {ident}_stage();", 4 * n_scratch, stem, (r, c))
