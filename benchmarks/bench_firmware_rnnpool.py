"""An RNNPool network as firmware on the emulator: MobileNetV2 w0.35 with the RNNPool stem of the paper's VWW
setting (stem conv, RNNPool replacing the first stages), random weights, int8 (onnxruntime, random calibration
images), planned by the `rnnpool` planner and run on qemu mps2-an500 (Cortex-M7, -O2) with the RNNPool in float32.
Prints the plan arena against the arena the linker placed, the layer-plan arena of the same network without the
rewrite, bit-exact outputs against the NumPy oracle, top-1 against onnxruntime and instructions per inference.

    .venv/bin/python benchmarks/bench_firmware_rnnpool.py [--resolution 112] [--cell fastgrnn|gru] [--images 20]

The classifier's random bias is zeroed: with random weights and random-normal inputs the quantizer's int32 bias
(bias / (input scale × weight scale)) of the last layer can leave the int32 range, which says nothing about RNNPool.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tinyflow.arch import mobilenetv2
from tinyflow.deploy.onnx_export import export_onnx
from tinyflow.deploy.quantize import quantize_int8
from tinyflow.deployment import Deployment
from tinyflow.device import Device
from tinyflow.firmware.project import FirmwareSettings, make_firmware
from tinyflow.ir import from_arch
from tinyflow.ir.onnx_constants import attach_onnx_constants
from tinyflow.ir.rnnpool import rnnpool_graph
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan
from tinyflow.memory.rnnpool_plan import rnnpool_plan
from tinyflow.nn.rnnpool_net import RNNPoolNet

DEVICE = Device("stm32h743", 1024, 2048, "cortex_m7", 480)
SHOWN = (
    "plan_arena_bytes",
    "arena_bytes",
    "scratch_bytes",
    "sram_bytes",
    "flash_bytes",
    "images",
    "bit_exact",
    "top1_agreement_onnxruntime",
    "max_diff_steps_onnxruntime",
    "instructions_per_inference",
    "macs",
    "instructions_per_mac",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=112)
    ap.add_argument("--cell", choices=("fastgrnn", "gru"), default="fastgrnn")
    ap.add_argument("--images", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    res = args.resolution
    arch = mobilenetv2(0.35, res, num_classes=10, in_channels=3)
    options = {"stem_channels": 8, "hidden1": 8, "hidden2": 8, "cell": args.cell}
    net = RNNPoolNet.from_arch(arch, options).eval()
    with torch.no_grad():
        net.classifier.bias.zero_()
    x = np.random.default_rng(0).standard_normal((2 * args.images, 3, res, res)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        float_path, int8_path = Path(tmp) / "net.onnx", Path(tmp) / "net_int8.onnx"
        export_onnx(net, (1, 3, res, res), str(float_path))
        quantize_int8(str(float_path), str(int8_path), x[args.images :])
        graph = rnnpool_graph(net.rnnpool_arch)
        plan = rnnpool_plan(graph, MemoryConfig())
        layer = layer_plan(from_arch(arch), MemoryConfig())
        start = time.time()
        attach_onnx_constants(graph, int8_path)
        deployment = Deployment(graph, plan, {}, model_path=str(int8_path), source="network description")
        fw = make_firmware(deployment, DEVICE, Path(tmp) / "fw", x[: args.images], FirmwareSettings())
    print(f"MobileNetV2 w0.35 r{res}, RNNPool stem ({args.cell}), {DEVICE.name}, {time.time() - start:.0f} s")
    print(f"  layer-plan arena of the network without RNNPool: {layer.arena_bytes:,} B")
    print(f"  RNNPool MACs (float): {plan.extra.get('rnnpool_macs', 0):,}")
    for key in SHOWN:
        value = fw.get(key)
        print(f"  {key:32s} {value:,}" if isinstance(value, int) else f"  {key:32s} {value}")
    same = fw.get("arena_bytes") == fw.get("plan_arena_bytes")
    print(f"arena (map) = plan: {same}; bit-exact {fw.get('bit_exact')} / {fw.get('images')}")
    print(f"instructions per inference: {fw.get('instructions_per_inference'):,} instructions")


if __name__ == "__main__":
    main()
