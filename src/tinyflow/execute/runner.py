"""Run a network IR in PyTorch, layer by layer or patch by patch (MCUNetV2), with the same bound weights."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from tinyflow.errors import ConfigError
from tinyflow.execute.kernels import ConvParams, node_padding, run_valid
from tinyflow.ir.graph import Graph, Node
from tinyflow.ir.op_registry import rf_rule
from tinyflow.memory.receptive_field import Interval, PatchGeometry, Region, graph_patch_geometry


def _windowed(node: Node) -> bool:
    """The op reads a kernel window of its (padded) input: its receptive-field rule says so."""
    return rf_rule(node.op) == "windowed"


class Executor:
    """A network IR bound to float32 weights (BatchNorm folded), runnable as layers or as patches.

    Build it with `tinyflow.execute.bind.from_static` (a `StaticNet`) or `from_onnx` (an ONNX file's
    initializers). `params` maps a node name to its folded weights.
    """

    def __init__(
        self, graph: Graph, params: Mapping[str, ConvParams], clamps: Mapping[str, tuple[float, float]] | None = None
    ):
        self.graph = graph
        self.params = dict(params)
        self.clamps = dict(clamps or {})  # node -> (lo, hi) applied to its output (a QDQ model's ranges)
        self.order = [n for n in graph.topological_order() if n.op != "input"]
        missing = [n.name for n in self.order if n.op in ("conv2d", "linear", "batchnorm") and n.name not in params]
        if missing:
            raise ConfigError(f"executor: no weights bound for nodes {missing[:5]} of graph '{graph.name}'")
        self._last_use = _last_use(graph, self.order)

    # ---------------------------------------------------------------- layer execution
    def run_layer(self, x: torch.Tensor) -> torch.Tensor:
        """Every op over its whole tensor, in topological order (TF Lite Micro / TinyEngine style)."""
        return self._run_rest({self._input_name(): self._input(x)}, skip=set())

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        clamp = self.clamps.get(self._input_name())
        return x if clamp is None else torch.clamp(x, clamp[0], clamp[1])

    # ---------------------------------------------------------------- patch execution
    def run_patch(self, x: torch.Tensor, patch_blocks: int, n_patches: int) -> torch.Tensor:
        """The first `patch_blocks` blocks patch by patch on an n×n grid of their output; the rest per layer."""
        geo = graph_patch_geometry(self.graph, patch_blocks, n_patches)
        return self.run_geometry(x, geo)

    def run_geometry(self, x: torch.Tensor, geo: PatchGeometry) -> torch.Tensor:
        x = self._input(x)
        stage_out = self._run_patch_stage(x, geo)
        skip = {op.output for op in geo.ops}
        return self._run_rest({geo.stage_input: x, geo.stage_output: stage_out}, skip=skip)

    def run_plan(self, plan: Any, x: torch.Tensor) -> torch.Tensor:
        """Run an ExecutionPlan by its steps' declared kinds: patch execution (over the grid its `extra` names)
        when it has `patch` steps, layer execution when all are `layer` steps."""
        kinds = {step.kind for step in plan.steps}
        if kinds <= {"layer"}:
            return self.run_layer(x)
        if kinds == {"layer", "patch"} or kinds == {"patch"}:
            extra = plan.extra
            return self.run_patch(x, int(extra["patch_blocks"]), int(extra["n_patches"]))
        raise ConfigError(
            f"executor: the plan '{plan.scheduler}' has steps of kind {sorted(kinds - {'layer', 'patch'})}, which the "
            "PyTorch executor does not run (it runs layer and patch steps)"
        )

    # ---------------------------------------------------------------- internals
    def _input_name(self) -> str:
        names = self.graph.inputs
        if len(names) != 1:
            raise ConfigError(f"executor: graph '{self.graph.name}' has inputs {names}; exactly one is supported")
        return names[0]

    def _run_node(self, node: Node, xs: list[torch.Tensor], pads: tuple[int, int, int, int]) -> torch.Tensor:
        y = run_valid(node, xs, self.params.get(node.name), pads)
        clamp = self.clamps.get(node.name)
        return y if clamp is None else torch.clamp(y, clamp[0], clamp[1])

    def _run_rest(self, tensors: dict[str, torch.Tensor], skip: set[str]) -> torch.Tensor:
        for i, node in enumerate(self.order):
            if node.name in skip:
                continue
            xs = [tensors[t] for t in node.inputs]
            pads = node_padding(node) if _windowed(node) else (0, 0, 0, 0)
            tensors[node.name] = self._run_node(node, xs, pads)
            for t in self._last_use.get(i, ()):  # free what no later op reads
                tensors.pop(t, None)
        outs = [tensors[o] for o in self.graph.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)  # type: ignore[return-value]

    def _run_patch_stage(self, x: torch.Tensor, geo: PatchGeometry) -> torch.Tensor:
        for op in geo.ops:
            const = self.params.get(op.output)
            spatial = const is not None and const.weight.dim() >= 2 and max(const.weight.shape[-2:]) > 1
            if self.graph[op.output].op == "act" and spatial:
                raise ConfigError(
                    f"scheduler.patch_blocks: node '{op.output}' combines its input with a constant that varies "
                    "over H and W, which cannot run patch by patch; choose a smaller patch_blocks"
                )
        out_node = self.graph[geo.stage_output]
        full = x.new_zeros((x.shape[0], *out_node.shape[1:]))  # the assembled stage output, one full buffer
        for patch in geo.patches:
            # each held tensor: (values, the region of its map they cover); the input is read where it lies
            held: dict[str, tuple[torch.Tensor, Region]] = {
                geo.stage_input: (x, Region(*(_full(n) for n in x.shape[2:4])))
            }
            for op in geo.ops:
                if op.output not in patch.tensors:
                    continue
                node = self.graph[op.output]
                out_r = patch.tensors[op.output]
                if _windowed(node):
                    want = op.input_region(out_r)
                    got = want.clip(op.in_hw)
                    pads = (
                        got.h.start - want.h.start,
                        want.h.stop - got.h.stop,
                        got.w.start - want.w.start,
                        want.w.stop - got.w.stop,
                    )
                else:
                    got, pads = out_r, (0, 0, 0, 0)
                xs = [_crop(*held[t], got) for t in node.inputs]
                y = self._run_node(node, xs, pads)
                if tuple(y.shape[2:4]) != out_r.hw:  # a geometry bug must never pass silently
                    raise RuntimeError(
                        f"patch {patch.row},{patch.col}: {node.name} gave {tuple(y.shape)}, want {out_r}"
                    )
                held[op.output] = (y, out_r)
            y, r = held[geo.stage_output]
            full[:, :, r.h.start : r.h.stop, r.w.start : r.w.stop] = y
        return full


def _full(n: int) -> Interval:
    return Interval(0, int(n))


def _crop(t: torch.Tensor, held: Region, want: Region) -> torch.Tensor:
    """The part of `t` (covering `held`) that covers `want` (which must lie inside `held`)."""
    h0, w0 = want.h.start - held.h.start, want.w.start - held.w.start
    if h0 < 0 or w0 < 0 or want.h.stop > held.h.stop or want.w.stop > held.w.stop:
        raise RuntimeError(f"patch region {want} is not inside the held region {held}")
    return t[:, :, h0 : h0 + want.h.size, w0 : w0 + want.w.size]


def _last_use(graph: Graph, order: list[Node]) -> dict[int, list[str]]:
    """Step index -> tensors read for the last time there (graph outputs are never freed)."""
    last: dict[str, int] = {}
    for i, node in enumerate(order):
        for t in node.inputs:
            last[t] = i
    keep = set(graph.outputs)
    out: dict[int, list[str]] = {}
    for t, i in last.items():
        if t not in keep:
            out.setdefault(i, []).append(t)
    return out


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).abs().max())
