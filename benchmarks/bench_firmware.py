"""Instructions per inference of generated firmware on the emulator vs MACs: the MicroNets linear model, measured.

Samples subnets of the default search space (conf/search_space/mcunet.yaml at the default task's cell, w0.5 r48,
1 input channel, 10 classes), gives each random weights and BatchNorm statistics, exports and quantizes it to int8
(onnxruntime, random calibration images), generates its layer-plan firmware, builds it for `--core`
(default Cortex-M7, -O2) and runs it on that core's qemu board (M7: mps2-an500) with -icount (instructions, not
cycles). Fits instructions = a·MACs + b,
prints r², writes the CSV `python -m tinyflow.cost.fit` reads (latency_ms = instructions × CPI / clock, with the
assumed CPI named here: qemu counts instructions, a Cortex-M7 retires up to two per cycle and stalls on loads,
so CPI = 1 is an assumption, not a measurement). Ends with MobileNetV2 w0.35 r144 (int8, random weights).

    .venv/bin/python benchmarks/bench_firmware.py [--subnets 30] [--csv firmware_rows.csv] [--cpi 1.0]
        [--clock-mhz 216] [--images 2] [--core cortex_m7]
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tinyflow.arch import mobilenetv2
from tinyflow.arch.space import MBConvSpace
from tinyflow.cost.fit import fit_line
from tinyflow.deploy.onnx_export import export_onnx
from tinyflow.deploy.quantize import quantize_int8
from tinyflow.deployment import Deployment
from tinyflow.device import Device
from tinyflow.firmware.project import FirmwareSettings, make_firmware
from tinyflow.ir.onnx_import import from_onnx
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan
from tinyflow.nn.static import StaticNet

REPO = Path(__file__).resolve().parents[1]


def board(core: str) -> Device:
    """A measurement board with the core's instruction set and room for every subnet (4 MB code, 4 MB data)."""
    return Device("mps2-board", 4096, 4096, core, 216)


def default_space() -> MBConvSpace:
    import yaml

    node = yaml.safe_load((REPO / "conf" / "search_space" / "mcunet.yaml").read_text())
    keys = ("stem_channels", "first_block_channels", "tail_channels", "tail_kernel", "tail_expand", "head_channels")
    keys += ("kernel_choices", "expand_choices", "depth_choices")
    kwargs = {k: node[k] for k in keys if k in node}
    kwargs["stages"] = tuple(node["stages"])
    return MBConvSpace(width_mult=0.5, resolution=48, in_channels=1, num_classes=10, **kwargs)


def int8_subnet(arch, work: Path, seed: int) -> Path:
    """Random weights and BatchNorm statistics -> the int8 ONNX file (8 calibration images drawn from `seed`)."""
    torch.manual_seed(seed)
    net = StaticNet(arch).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    r, c = arch.resolution, arch.in_channels
    path = export_onnx(net, (1, c, r, r), work / "float.onnx")
    calib = np.random.default_rng(seed).standard_normal((8, c, r, r)).astype(np.float32)
    return quantize_int8(path, work / "int8.onnx", calib)


def measure(arch, work: Path, seed: int, images: int, core: str = "cortex_m7") -> dict:
    """Random weights -> int8 ONNX -> firmware -> qemu: MACs and median instructions per inference."""
    q = int8_subnet(arch, work, seed)
    r, c = arch.resolution, arch.in_channels
    rng = np.random.default_rng(seed)
    rng.standard_normal((8, c, r, r))  # the calibration draw: the test images follow it, as before
    graph = from_onnx(q)
    plan = layer_plan(graph, MemoryConfig())
    x = rng.standard_normal((images, c, r, r)).astype(np.float32)
    deployment = Deployment(graph, plan, {}, model_path=str(q), source="int8 model file")
    fw = make_firmware(deployment, board(core), work, x, FirmwareSettings(images=images))
    assert fw["bit_exact"] == images, "firmware differs from the oracle"
    return {"macs": plan.macs, "instructions": fw["instructions_per_inference"], "flash": fw["flash_bytes"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subnets", type=int, default=30)
    ap.add_argument("--csv", default="firmware_rows.csv")
    ap.add_argument("--cpi", type=float, default=1.0, help="assumed cycles per instruction")
    ap.add_argument("--clock-mhz", type=float, default=216.0, help="the device's clock (stm32f746: 216)")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--core", default="cortex_m7", help="the core built for: cortex_m0plus | cortex_m3 | _m4 | _m7")
    args = ap.parse_args()
    torch.set_num_threads(1)
    space = default_space()
    rng = random.Random(0)
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.subnets):
            arch = space.sample(rng)
            work = Path(tmp) / f"s{i}"
            work.mkdir()
            row = measure(arch, work, i, args.images, args.core)
            rows.append({"model": f"subnet{i}", **row})
            print(
                f"subnet {i:2d}: {row['macs'] / 1e6:6.2f} M MACs, {row['instructions'] / 1e6:8.2f} M instructions "
                f"({row['instructions'] / row['macs']:.2f} per MAC)",
                flush=True,
            )
        macs = np.array([r["macs"] for r in rows], float)
        insns = np.array([r["instructions"] for r in rows], float)
        fit = fit_line(macs, insns)
        print(f"\n{len(rows)} subnets of the default space (w0.5 r48), {time.perf_counter() - start:.0f} s")
        print(f"instructions = {fit.slope:.3f} * MACs + {fit.intercept:,.0f}   r2 = {fit.r2:.4f}")
        ms_per = args.cpi / (args.clock_mhz * 1e3)  # ms per instruction at the assumed CPI
        with open(args.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["model", "macs", "instructions", "latency_ms", "core"])
            for r in rows:
                w.writerow([r["model"], r["macs"], r["instructions"], f"{r['instructions'] * ms_per:.6f}", args.core])
        print(
            f"wrote {args.csv} (latency_ms = instructions x CPI {args.cpi:g} / {args.clock_mhz:g} MHz); "
            f"python -m tinyflow.cost.fit {args.csv} --core {args.core} --write"
        )
        work = Path(tmp) / "mbv2"
        work.mkdir()
        ref = measure(mobilenetv2(0.35, 144), work, 0, 1, args.core)
    print(
        f"MobileNetV2 w0.35 r144 int8 ({args.core}): {ref['macs'] / 1e6:.2f} M MACs, "
        f"{ref['instructions'] / 1e6:.2f} M instructions"
    )
    print(f"instructions per MAC: {ref['instructions'] / ref['macs']:.2f}")


if __name__ == "__main__":
    main()
