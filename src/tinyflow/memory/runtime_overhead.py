"""The SRAM the generated C firmware needs beside the plan's arena, predicted from the IR and the plan.

A plan's SRAM figure is `arena + overhead` (`sram_total_bytes` of an analysis); the overhead has four parts:

- `scratch`: the kernel scratch the generated code declares (in .bss): `tf_plane`, the largest of a depthwise
  layer's zero-point padded plane ((oh−1)·s + k) × ((ow−1)·s + k) over the rectangle a step computes (the whole
  map, or a patch's region) and an im2col convolution's two rows 2·row (row = kh·kw·cin, padded to a multiple of
  4 where that adds at most 1/8); on a core with the DSP extension `tf_wide`, two pixels' inputs widened to int16
  (int32 words = the widest pointwise cin or im2col row that is a multiple of 4; elsewhere the compiler drops it);
  RNNPool's float32 RNN scratch — the rules of `firmware.codegen`, read from the IR instead of generated code;
- `io`: the output buffer outside the arena (the harness's `out_buf`; the input is read where it lies);
- `runtime`: the rest of .data + .bss (start-up, harness, C library), a constant per core and options;
- `stack`: the stack's high-water mark: a base (start-up code, the harness's main, `tf_model_run`'s own frame)
  plus the largest frame of the layer functions the plan calls (the firmware is compiled with
  `-fno-inline-functions-called-once`, so each layer is one function whose frame is its kernel's), the frame of
  a layer keyed by its kernel (`depthwise_k7x7`, `conv_k3x3`, `pointwise`, `add`, ...), per core and options.

`runtime` and the stack's frames are fitted to measured builds (map file + painted stack) by
`benchmarks/bench_overhead.py --write`, which rewrites `runtime_overhead.yaml` beside this module; a core with no
fit (Cortex-M33: built, not run; Xtensa) uses the largest constants of the fitted cores, and says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

FIT_FILE = Path(__file__).with_name("runtime_overhead.yaml")  # package data (*.yaml)
DEFAULT_OPT = "-O2"
ALIGN = 4  # every .bss buffer of the generated code is 4-byte aligned
DSP_CORES = ("cortex_m4", "cortex_m7", "cortex_m33", "cortex_m55")  # SMLAD & co.: the kernels' widened-input path


@dataclass(frozen=True)
class Overhead:
    """The firmware's SRAM beside the arena, by part (bytes), and what the constants come from."""

    scratch: int
    io: int
    runtime: int
    stack: int
    core: str
    opt: str
    source: str

    @property
    def total(self) -> int:
        return self.scratch + self.io + self.runtime + self.stack

    def parts(self) -> dict[str, int]:
        return {"scratch": self.scratch, "io": self.io, "runtime": self.runtime, "stack": self.stack}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def _round(n: int, to: int = ALIGN) -> int:
    return -(-int(n) // to) * to


def _conv_kind(node: Any, in_shape: tuple[int, ...]) -> str:
    """depthwise | pointwise | conv (im2col), as the lowering classifies a conv2d."""
    a = node.attrs
    (kh, kw), (sh, sw) = a["kernel"], tuple(a.get("stride", (1, 1)))
    cin, cout, groups = in_shape[1], a["out_channels"], a.get("groups", 1)
    if groups == cin == cout and cin > 1:
        return "depthwise"
    if (kh, kw) == (1, 1) and (sh, sw) == (1, 1) and tuple(a.get("padding", (0,) * 4)) == (0, 0, 0, 0):
        return "pointwise"
    return "conv"


def conv_row(node: Any, in_shape: tuple[int, ...]) -> int:
    """An im2col conv's row: kh·kw·cin, padded to a multiple of 4 when that adds at most 1/8 (`codegen.conv_row`)."""
    (kh, kw) = node.attrs["kernel"]
    k = kh * kw * in_shape[1]
    kp = -(-k // 4) * 4
    return kp if 8 * (kp - k) <= k else k


def _conv_scratch(node: Any, in_shape: tuple[int, ...], oh: int, ow: int) -> int:
    """`tf_plane` bytes of one conv2d over an oh × ow output rectangle (NCHW shapes)."""
    a = node.attrs
    (kh, kw), (sh, sw) = a["kernel"], tuple(a.get("stride", (1, 1)))
    kind = _conv_kind(node, in_shape)
    if kind == "depthwise":  # one padded input plane
        return ((oh - 1) * sh + kh) * ((ow - 1) * sw + kw)
    return 2 * conv_row(node, in_shape) if kind == "conv" else 0  # im2col of two output pixels


def wide_bytes(graph: Any, core: str) -> int:
    """`tf_wide` on a DSP core: int32 words = the widest pointwise cin or im2col row that is a multiple of 4."""
    if core not in DSP_CORES:
        return 0
    sizes = [0]
    for node in graph:
        if node.op != "conv2d":
            continue
        in_shape = graph[node.inputs[0]].shape
        kind = _conv_kind(node, in_shape)
        size = in_shape[1] if kind == "pointwise" else conv_row(node, in_shape) if kind == "conv" else 0
        sizes.append(size if size % 4 == 0 else 0)
    return 4 * max(sizes)


def _rnnpool_scratch(node: Any, in_shape: tuple[int, ...]) -> int:
    """RNNPool's float32 scratch (`rnnpool_codegen.scratch_floats`)."""
    a = node.attrs
    (r, c), h1, h2 = a["patch"], a["hidden1"], a["hidden2"]
    g = 3 if a.get("cell", "fastgrnn") == "gru" else 1
    return 4 * ((r + c) * h1 + h2 + max(in_shape[1], h1) + 2 * g * max(h1, h2))


def layer_key(node: Any, in_shape: tuple[int, ...]) -> str:
    """The stack-frame class of a layer's function: its kernel and, for convolutions, the kernel size."""
    if node.op != "conv2d":
        return str(node.op)
    a = node.attrs
    (kh, kw), groups = a["kernel"], a.get("groups", 1)
    if groups == in_shape[1] == a["out_channels"] and in_shape[1] > 1:
        return f"depthwise_k{kh}x{kw}"
    if _conv_kind(node, in_shape) == "pointwise":
        return "pointwise"
    return f"conv_k{kh}x{kw}"


@dataclass(frozen=True)
class _Whole:
    """A graph node run over its whole map (what `scratch_bytes` reads of a plan step)."""

    node: str
    kind: str = "layer"
    extra: tuple = ()


def layer_keys(graph: Any, plan: Any = None) -> set[str]:
    """The frame classes of the layers the plan (without one: the graph) runs."""
    names = [s.node for s in plan.steps] if plan is not None else [n.name for n in graph]
    return {layer_key(graph[n], graph[graph[n].inputs[0]].shape) for n in set(names) if graph[n].inputs}


def scratch_bytes(graph: Any, plan: Any = None, core: str = "") -> int:
    """The generated code's `tf_plane` (+ `tf_wide` on a DSP core, + RNNPool's float scratch) for this plan, in
    bytes (4-aligned); without a plan, every node over its whole map: a bound for any plan (a patch runs a region)."""
    plane, rnn = 0, 0
    steps = plan.steps if plan is not None else [_Whole(node.name) for node in graph if node.inputs]
    for step in steps:
        node = graph[step.node]
        if node.op == "rnnpool":
            rnn = max(rnn, _rnnpool_scratch(node, graph[node.inputs[0]].shape))
            continue
        if node.op != "conv2d":
            continue
        if step.kind == "patch" and "region" in step.extra:
            r0, r1, c0, c1 = step.extra["region"]
            oh, ow = r1 - r0, c1 - c0
        else:  # a whole layer (an RNNPool stem: at most its whole map, an upper bound)
            oh, ow = node.shape[2], node.shape[3]
        plane = max(plane, _conv_scratch(node, graph[node.inputs[0]].shape, oh, ow))
    return _round(max(plane, 1)) + wide_bytes(graph, core) + (_round(rnn) if rnn else 0)


def io_bytes(graph: Any) -> int:
    """The output buffer outside the arena (the input is read where the application keeps it)."""
    outs = graph.outputs if hasattr(graph, "outputs") else []
    total = sum(math.prod(graph[name].shape[1:]) for name in outs) if outs else 0
    return _round(total)


@lru_cache(maxsize=1)
def fitted() -> dict[str, Any]:
    """The fitted constants: {"command": ..., "cores": {core: {opt: {"runtime": B, "stack": B, ...}}}}."""
    if not FIT_FILE.is_file():
        return {"command": "", "cores": {}}
    return yaml.safe_load(FIT_FILE.read_text())


def constants(core: str, opt: str = DEFAULT_OPT) -> tuple[dict[str, Any], str]:
    """The fitted row of `core` built with `opt` ({"runtime", "stack_base", "frames", "builds"}) and its source;
    an unfitted core or option gets the largest of every fitted row (a bound, not a measurement), and says so."""
    cores = fitted()["cores"]
    row = cores.get(core, {}).get(opt)
    if row is not None:
        return row, f"fitted on {row['builds']} builds ({core}, {opt})"
    rows = [r for per_opt in cores.values() for r in per_opt.values()]
    if not rows:
        return {"runtime": 256, "stack_base": 1024, "frames": {}}, "no fit file (benchmarks/bench_overhead.py --write)"
    frames: dict[str, int] = {}
    for r in rows:
        for key, b in r["frames"].items():
            frames[key] = max(frames.get(key, 0), int(b))
    merged = {
        "runtime": max(int(r["runtime"]) for r in rows),
        "stack_base": max(int(r["stack_base"]) for r in rows),
        "frames": frames,
    }
    return merged, f"no fit for {core} {opt}: the largest of the fitted cores' ({', '.join(sorted(cores))})"


#: stack headroom above the fit: the fitted frames are the largest seen over the default space's subnets, and a
#: model from elsewhere (kws_ref_model on Cortex-M0+: 8 B over the tight fit) may lay out a kernel's frame a little
#: larger; 64 B keeps predicted >= measured on the published models at about 5 % over on the fitted builds
STACK_HEADROOM = 64


def stack_bytes(row: dict[str, Any], keys: set[str]) -> int:
    """Base + the largest frame among the layers' classes (an unfitted class: the largest fitted frame) + the
    headroom."""
    frames = {k: int(v) for k, v in row["frames"].items()}
    largest = max(frames.values(), default=0)
    return int(row["stack_base"]) + max((frames.get(k, largest) for k in keys), default=0) + STACK_HEADROOM


def predict(graph: Any, plan: Any, core: str, opt: str = DEFAULT_OPT) -> Overhead:
    """The firmware's SRAM beside the arena for `plan` of `graph` on `core` built with `opt` (`plan` None: a bound
    for any plan of the graph, what a scheduler choosing its plan is given)."""
    row, source = constants(core, opt)
    stack = stack_bytes(row, layer_keys(graph, plan))
    scratch = scratch_bytes(graph, plan, core)
    return Overhead(scratch, io_bytes(graph), int(row["runtime"]), stack, core, opt, source)
