"""The `rnnpool` plan: stem conv + RNNPool run patch by patch, then the rest of the network layer by layer.

For every RNNPool patch (row-major over the pooled grid) two steps run: the stem conv computes only the r×c
stem pixels under that patch (from the input region below them; outside the stem map the patch is RNNPool's
zero padding, not computed), then RNNPool pools that patch straight into its slot of the pooled output. Alive
during the patch loop: the network input (size 0 with `memory.count_input: false`, in which case the input
region of one patch is a buffer of its own, filled from the stream), one stem patch buffer, RNNPool's scratch
(row/column summaries and one step's temporaries) and the pooled output. The full stem output never exists.
Stem pixels shared by overlapping patches are recomputed: the plan's MACs count that (`extra`).
After the loop the network runs op by op with the lifetimes and aliasing rules of the `layer` plan.
"""

from __future__ import annotations

from tinyflow.ir.graph import Graph, Node
from tinyflow.ir.ops import IRError
from tinyflow.ir.rnnpool import RNNPoolOp
from tinyflow.memory.builder import build_plan
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import profile_rows
from tinyflow.memory.lifetimes import compute_lifetimes, working_sets
from tinyflow.memory.plan import ExecutionPlan, Step, TensorAlloc


def _span(start: int, size: int, limit: int) -> tuple[int, int]:
    return max(start, 0), min(start + size, limit)


def rnnpool_plan(graph: Graph, memory: MemoryConfig, check: bool = True) -> ExecutionPlan:
    """Plan a graph whose first ops are `input -> stem (conv2d) -> rnnpool` (see `tinyflow.ir.rnnpool`)."""
    lt = compute_lifetimes(graph, memory)
    if len(lt.steps) < 2 or lt.steps[0].op != "conv2d" or lt.steps[1].op != "rnnpool":
        raise IRError(
            f"graph '{graph.name}': the rnnpool plan needs the ops input -> stem conv -> rnnpool first; got "
            f"{[n.op for n in lt.steps[:2]]}. Build it with tinyflow.ir.rnnpool.rnnpool_graph."
        )
    stem, pool = lt.steps[0], lt.steps[1]
    inp = graph.nodes[stem.inputs[0]]
    if len(graph.consumers()[stem.name]) != 1:
        raise IRError(f"graph '{graph.name}': the stem '{stem.name}' feeds more than RNNPool; it cannot run per patch")
    nb, cin, hin, win = inp.shape
    _, cs, hs, ws = stem.shape
    (kh, kw), (sh, sw) = stem.attrs["kernel"], stem.attrs.get("stride", (1, 1))
    pt, pl = stem.attrs.get("padding", (0, 0, 0, 0))[:2]
    a = pool.attrs
    (r, c), (sr, sc), (pr, pc) = a["patch"], a["stride"], a.get("padding", (0, 0))
    ho, wo = pool.shape[2], pool.shape[3]
    n_patches = ho * wo
    eb = memory.dtype_bytes
    stem_pixel_macs = nb * cs * (cin // stem.attrs.get("groups", 1)) * kh * kw
    pool_patch_macs = nb * RNNPoolOp.patch_macs(pool, cs)

    # ---- the patch loop: steps 2p (stem on patch p) and 2p+1 (rnnpool on patch p)
    steps: list[Step] = []
    ws_nodes: list[Node] = []
    region_max = 0
    stem_macs_total = 0
    stem_patch_name, scratch_name, region_name = f"{stem.name}.patch", f"{pool.name}.scratch", f"{inp.name}.patch"
    streamed = not memory.count_input
    stem_inputs = [region_name] if streamed else [inp.name]
    for oy in range(ho):
        y0, y1 = _span(oy * sr - pr, r, hs)
        for ox in range(wo):
            x0, x1 = _span(ox * sc - pc, c, ws)
            n_pix = max(0, y1 - y0) * max(0, x1 - x0)
            if n_pix:  # the input rows/cols under those stem pixels, clipped to the image
                iy0, iy1 = _span(y0 * sh - pt, (y1 - y0 - 1) * sh + kh, hin)
                ix0, ix1 = _span(x0 * sw - pl, (x1 - x0 - 1) * sw + kw, win)
                region_max = max(region_max, (iy1 - iy0) * (ix1 - ix0))
            macs = n_pix * stem_pixel_macs
            stem_macs_total += macs
            i = len(steps)
            info = {"stem_rows": [y0, y1], "stem_cols": [x0, x1]}
            steps.append(
                Step(
                    i,
                    stem.name,
                    stem.op,
                    stem.block,
                    stem_inputs,
                    [stem_patch_name],
                    macs,
                    0,
                    (oy, ox),
                    info,
                    kind="rnnpool",
                )
            )
            steps.append(
                Step(
                    i + 1,
                    pool.name,
                    pool.op,
                    pool.block,
                    [stem_patch_name],
                    [pool.name],
                    pool_patch_macs,
                    0,
                    (oy, ox),
                    kind="rnnpool",
                )
            )
            ws_nodes.append(Node(stem_patch_name, stem.op, tuple(stem_inputs), {}, (), stem.block))
            ws_nodes.append(Node(pool.name, pool.op, (stem_patch_name,), {}, (), pool.block))
    loop_end = len(steps) - 1
    shift = loop_end - 1  # layer step 1 (rnnpool) ends at loop_end; later steps move by `shift`

    tensors: list[TensorAlloc] = []
    for t in lt.tensors:
        if t.name == stem.name:
            continue
        if t.name == inp.name:
            t.last_step = loop_end - 1 if t.last_step == 0 else t.last_step + shift
        elif t.name == pool.name:
            t.first_step, t.last_step = 1, t.last_step + shift
        else:
            t.first_step, t.last_step = t.first_step + shift, t.last_step + shift
        tensors.append(t)
    extra_tensors = [
        TensorAlloc(stem_patch_name, nb * r * c * cs * eb, 0, loop_end, buffer=stem_patch_name),
        TensorAlloc(scratch_name, nb * RNNPoolOp.scratch_elems(pool) * eb, 1, loop_end, buffer=scratch_name),
    ]
    if streamed:
        extra_tensors.append(TensorAlloc(region_name, nb * cin * region_max * eb, 0, loop_end - 1, buffer=region_name))
    tensors = extra_tensors + tensors

    tail_nodes = lt.steps[2:]
    for j, node in enumerate(tail_nodes):
        m = graph.node_macs(node)
        steps.append(
            Step(loop_end + 1 + j, node.name, node.op, node.block, list(node.inputs), [node.name], m, 0, kind="layer")
        )
    ws = working_sets(ws_nodes + tail_nodes, tensors, memory.rule)
    for s, w in zip(steps, ws):
        s.working_set_bytes = w

    # memory profile: one row per op (the patch ops at their worst patch)
    by_name = {t.name: t for t in tensors}
    loop_rows = []
    for node, out_name, in_names, macs, step_slice in (
        (stem, stem_patch_name, stem_inputs, stem_macs_total, slice(0, loop_end + 1, 2)),
        (pool, pool.name, [stem_patch_name], pool_patch_macs * n_patches, slice(1, loop_end + 1, 2)),
    ):
        loop_rows.append(
            {
                "name": node.name,
                "op": node.op,
                "block": node.block,
                "output_shape": [nb, cs, r, c] if node is stem else list(node.shape),
                "input_bytes": sum(by_name[n].size for n in in_names),
                "output_bytes": by_name[out_name].size,
                "working_set_bytes": max(ws[step_slice]),
                "macs": macs,
                "per_patch": True,
            }
        )
    rows = loop_rows + profile_rows(tail_nodes, ws[loop_end + 1 :], tensors, [s.macs for s in steps[loop_end + 1 :]])
    layerwise_stem_macs = graph.node_macs(stem)
    extra = {
        "rnnpool_patches": n_patches,  # not `n_patches`: that key is the patch scheduler's grid side
        "cut": getattr(graph.meta.get("rnnpool_arch"), "cut", None),
        "pooled_hw": [ho, wo],
        "rnnpool_patch": [r, c],
        "rnnpool_stride": [sr, sc],
        "rnnpool_padding": [pr, pc],
        "stem_patch_bytes": by_name[stem_patch_name].size,
        "rnnpool_scratch_bytes": by_name[scratch_name].size,
        "input_patch_bytes": by_name[region_name].size if streamed else 0,
        "stem_macs_layerwise": layerwise_stem_macs,
        "stem_macs_patchwise": stem_macs_total,
        "recompute_macs": stem_macs_total - layerwise_stem_macs,
        "rnnpool_macs": pool_patch_macs * n_patches,
        "macs_layerwise": graph.macs(),
    }
    return build_plan(
        "rnnpool",
        graph,
        memory,
        steps,
        tensors,
        rows,
        buffers=_buffers(tensors),
        extra=extra,
        check=check,
        patch_peak_suffix=" (per patch)",
    )


def _buffers(tensors: list[TensorAlloc]) -> list[tuple[str, int, int, int]]:
    """One arena buffer per storage, its largest member's size over its whole life (no occupancy pieces)."""
    agg: dict[str, list[int]] = {}
    for t in tensors:
        b = agg.setdefault(t.buffer, [t.size, t.first_step, t.last_step])
        b[0], b[1], b[2] = max(b[0], t.size), min(b[1], t.first_step), max(b[2], t.last_step)
    return [(name, s, f, la) for name, (s, f, la) in agg.items()]
