"""Patch-execution time ÷ layer-execution time of MobileNetV2 in PyTorch, measured side by side.

MCUNetV2 patch-based inference recomputes the overlap of neighbouring patches, so patch execution should
take about (1 + extra MACs / MACs) times as long as layer execution, plus the per-patch call overhead.

    .venv/bin/python benchmarks/bench_patch_exec.py [--width 1.0] [--resolution 224] [--n-patches 4]
        [--patch-blocks 5] [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tinyflow.arch import mobilenetv2
from tinyflow.contracts import MemoryConfig
from tinyflow.execute import from_static, max_abs_diff
from tinyflow.memory import layer_plan
from tinyflow.memory.patch_plan import patch_plan
from tinyflow.nn.static import StaticNet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--n-patches", type=int, default=4)
    ap.add_argument("--patch-blocks", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    net = StaticNet(mobilenetv2(args.width, args.resolution)).eval()
    ex = from_static(net)
    layer = layer_plan(ex.graph, MemoryConfig())
    patch = patch_plan(ex.graph, MemoryConfig(), args.patch_blocks, args.n_patches)
    x = torch.randn(1, 3, args.resolution, args.resolution)

    def run_layer() -> torch.Tensor:
        return ex.run_plan(layer, x)

    def run_patch() -> torch.Tensor:
        return ex.run_plan(patch, x)

    with torch.inference_mode():
        diff = max_abs_diff(run_layer(), run_patch())
        for _ in range(2):  # warm-up
            run_layer()
            run_patch()
        t_layer, t_patch = [], []
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both alike
            t0 = time.perf_counter()
            run_layer()
            t1 = time.perf_counter()
            run_patch()
            t2 = time.perf_counter()
            t_layer.append(t1 - t0)
            t_patch.append(t2 - t1)
    ml, mp = statistics.median(t_layer), statistics.median(t_patch)
    mac_ratio = patch.macs / layer.macs
    print(
        f"MobileNetV2 w{args.width} r{args.resolution}, {args.n_patches}x{args.n_patches} patches over "
        f"patch_blocks={args.patch_blocks}, torch threads={args.threads}, {args.repeats} interleaved repeats"
    )
    print(
        f"peak live bytes: layer {layer.peak_live_bytes:,}  patch {patch.peak_live_bytes:,}  "
        f"({layer.peak_live_bytes / patch.peak_live_bytes:.2f}x lower)"
    )
    print(f"MACs: layer {layer.macs:,}  patch {patch.macs:,}  (1 + overhead = {mac_ratio:.4f})")
    print(f"max |patch - layer| output difference: {diff:.3g}")
    print(f"median time: layer {ml * 1e3:.2f} ms  patch {mp * 1e3:.2f} ms")
    print(f"time ratio / MAC ratio: {mp / ml / mac_ratio:.3f}")
    print(f"patch_exec_time_ratio: {mp / ml:.3f} x")


if __name__ == "__main__":
    main()
