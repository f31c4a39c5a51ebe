"""The firmware's SRAM beside the arena, predicted vs measured: fits `tinyflow.memory.runtime_overhead`.

Samples subnets of the default search space (the cell bench_firmware.py uses: w0.5 r48, 1 input channel, 10
classes), random weights, int8 via onnxruntime, layer plan; builds each for every core (Cortex-M0+ on qemu
mps2-an385, M4 on an386, M7 on an500; `-O2` unless --opts) linked for the whole MPS2 board, runs 2 images and
measures the overhead: the ELF's .data + .bss less the arena (scratch, output buffer, the rest) and the stack
(painted high-water mark + the start-up frames from -fstack-usage). Fits per (core, opt): `runtime` = the largest
measured rest; per layer class (`runtime_overhead.layer_key`) the largest frame of its functions (model.su); the
stack base covering every build. Prints predicted vs measured per
subnet and core; --write stores the fit in src/tinyflow/memory/runtime_overhead.yaml (the file the model reads).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_overhead.py [--subnets 12] [--opts=-O2,-Os] [--write]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from tinyflow.deployment import Deployment
from tinyflow.device import Device
from tinyflow.firmware.project import FirmwareSettings, make_firmware
from tinyflow.firmware.qmodel import build_qmodel
from tinyflow.ir.onnx_import import from_onnx
from tinyflow.memory import runtime_overhead
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_firmware import default_space, int8_subnet

CORES = ("cortex_m0plus", "cortex_m4", "cortex_m7")


def measure(q: Path, core: str, opt: str, work: Path) -> dict:
    """Build and run the subnet's layer-plan firmware for `core`: the measured overhead parts and the arena."""
    graph = from_onnx(q)
    plan = layer_plan(graph, MemoryConfig())
    board = Device("mps2-board", 4096, 4096, core, 100)
    deployment = Deployment(graph, plan, {}, model_path=str(q), source="int8 model file")
    x = np.random.default_rng(0).standard_normal((2, *graph[graph.inputs[0]].shape[1:])).astype(np.float32)
    fw = make_firmware(deployment, board, work, x, FirmwareSettings(opt=opt, images=2, stack_reserve=4096))
    assert fw["bit_exact"] == 2 and fw["target"] == core, fw
    names = [layer.name for layer in build_qmodel(graph).layers]  # codegen's L### are these, in order
    frames: dict[str, int] = {}
    for line in (work / "firmware" / "build" / "model.su").read_text().splitlines():
        fn, size = line.split("\t")[0].rsplit(":", 1)[-1], int(line.split("\t")[1])
        if fn.startswith("L") and fn[1:].isdigit():
            node = graph[names[int(fn[1:])]]
            key = runtime_overhead.layer_key(node, graph[node.inputs[0]].shape)
            frames[key] = max(frames.get(key, 0), size)
    return {
        "arena": plan.arena_bytes,
        **fw["sram_overhead_measured"],
        "frames": frames,
        "keys": runtime_overhead.layer_keys(graph, plan),
        "graph": graph,
        "plan": plan,
    }


def fit(rows: list[dict]) -> dict:
    """Per (core, opt): the largest runtime rest; per layer class the largest frame; the stack base = the largest
    measured stack less the largest fitted frame among that build's layers (so every build is covered)."""
    cores: dict[str, dict] = {}
    for (core, opt), group in _groups(rows).items():
        frames: dict[str, int] = {}
        for r in group:
            for key, b in r["frames"].items():
                frames[key] = max(frames.get(key, 0), b)
        base = max(r["stack"] - max((frames.get(k, 0) for k in r["keys"]), default=0) for r in group)
        cores.setdefault(core, {})[opt] = {
            "runtime": max(r["runtime"] for r in group),
            "stack_base": base,
            "frames": dict(sorted(frames.items())),
            "builds": len(group),
        }
    return cores


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["core"], r["opt"]), []).append(r)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subnets", type=int, default=12)
    ap.add_argument("--opts", default="-O2", help="comma-separated: -O2,-Os")
    ap.add_argument("--write", action="store_true", help="store the fit in runtime_overhead.yaml")
    args = ap.parse_args()
    torch.set_num_threads(1)
    space, rng, rows = default_space(), random.Random(0), []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.subnets):
            arch = space.sample(rng)
            work = Path(tmp) / f"s{i}"
            work.mkdir()
            q = int8_subnet(arch, work, i)
            for core in CORES:
                for opt in args.opts.split(","):
                    row = measure(q, core, opt, work)
                    rows.append({"subnet": i, "core": core, "opt": opt, **row})
                    print(f"subnet {i:2d} {core:13s} {opt}: measured {row['total']:,} B", flush=True)
    cores = fit(rows)
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_overhead.py " + " ".join(sys.argv[1:])
    data = {"command": command.strip(), "subnets": args.subnets, "cores": cores}
    if args.write:
        runtime_overhead.FIT_FILE.write_text(
            f"# written by: {data['command']}\n" + yaml.safe_dump(data, sort_keys=True)
        )
        runtime_overhead.fitted.cache_clear()
        print(f"wrote {runtime_overhead.FIT_FILE}")
    print(f"\n{len(rows)} builds in {time.perf_counter() - start:.0f} s; fit: {json.dumps(cores)}\n")
    print(
        "| subnet | core | opt | arena B | scratch | io | runtime | stack (pred / meas) | predicted B | measured B |"
        " pred/meas |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for r in rows:
        c = cores[r["core"]][r["opt"]]
        p_scratch = runtime_overhead.scratch_bytes(r["graph"], r["plan"], r["core"])
        p_io = runtime_overhead.io_bytes(r["graph"])
        p_stack = runtime_overhead.stack_bytes(c, r["keys"])
        pred = p_scratch + p_io + c["runtime"] + p_stack
        ratio = pred / r["total"]
        worst = max(worst, ratio)
        assert pred >= r["total"], (r["subnet"], r["core"], pred, r["total"])
        assert p_scratch == r["scratch"] and p_io == r["io"], (p_scratch, r["scratch"], p_io, r["io"])
        print(
            f"| {r['subnet']} | {r['core']} | {r['opt']} | {r['arena']:,} | {r['scratch']:,} | {r['io']} | "
            f"{r['runtime']} | {p_stack} / {r['stack']} | {pred:,} | {r['total']:,} | {ratio:.3f} |"
        )
    print(f"\npredicted >= measured on all {len(rows)} builds; largest predicted/measured {worst:.3f}")


if __name__ == "__main__":
    main()
