"""Instructions per inference of the firmware built for the Cortex-M0+ (Armv6-M, no DSP), per op kind.

Runs `python -m tinyflow.firmware` (conf/firmware.yaml) with `firmware.profile=true output=json` on int8 model
files for `--target` (default cortex_m0plus: `-mcpu=cortex-m0plus`, run on qemu's M3 board mps2-an385) under each
`--rounding`, and prints the whole-inference instructions (median over the images), bit-exactness against the
oracle and the instructions per op kind (the profile's rows). The kernels measured are the ones importable as
`tinyflow` (run it once with PYTHONPATH pointing at another checkout's `src` for a before / after table).

    .venv/bin/python benchmarks/bench_m0plus.py [MODEL ...] [--rounding single tflite] [--target cortex_m0plus]
        [--images 10] [--json rows.json]

`--run outputs/runs/<id>` instead measures a pipeline run's own firmware again: the Deployment its schedule stage
saved (`deployment.npz`), the test images its `backend=c` ran (`firmware/run_firmware/images.bin`) and its
device (`run_config.json`), with the run's rounding — the same network, plan and inputs as the run's report, built
with the kernels importable now (once plain, once profiled for the per-kind rows).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("tests/data/models/kws_ref_model.tflite", "tests/data/models/person_detect.tflite")
# GCC puts Thumb-1 inline assembly in divided syntax, where the calibration loop's `subs rX, rX, #1` does not
# assemble: harnesses before d49539f (the kernels before the Armv6-M ones, measured from another checkout) need it
UNIFIED = ('__asm__ volatile("1: subs', '__asm__ volatile(".syntax unified\\n1: subs')


def app(argv: list[str]) -> None:
    """`python -m tinyflow.firmware argv...`, with the harness's calibration loop assembled on Armv6-M too."""
    import tinyflow.firmware.build as build

    template = build.template
    build.template = lambda name: template(name).replace(*UNIFIED) if name == "harness_main.c" else template(name)
    from tinyflow.firmware.__main__ import main

    sys.argv = ["tinyflow.firmware", *argv]
    main()


def measure(model: str, target: str, rounding: str, images: int) -> dict:
    kind = "tflite" if model.endswith(".tflite") else "onnx"
    args = [f"network={kind}", f"network.path={model}", f"firmware.target={target}", f"firmware.rounding={rounding}"]
    args += [f"firmware.images={images}", "firmware.profile=true", "output=json"]
    proc = subprocess.run(
        [sys.executable, __file__, "--app", *args], capture_output=True, text=True, cwd=REPO, check=False
    )
    if not proc.stdout.strip():
        raise SystemExit(f"{model}: the firmware app failed\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def rerun(run: Path, profile: bool) -> dict:
    """A pipeline run's firmware (its Deployment, device, test images and rounding) built and run again."""
    import tempfile

    import numpy as np

    import tinyflow.firmware.build as build
    from tinyflow.deployment import Deployment
    from tinyflow.device import Device
    from tinyflow.firmware.project import FirmwareSettings, make_firmware
    from tinyflow.firmware.qmodel import build_qmodel

    template = build.template
    build.template = lambda name: template(name).replace(*UNIFIED) if name == "harness_main.c" else template(name)
    cfg = json.loads((run / "run_config.json").read_text())
    device = {k[len("device.") :]: v for k, v in cfg.items() if k.startswith("device.")}
    device["core"] = str(device["core"]).split(".")[-1]
    dep = Deployment.load(run / "deployment.npz")
    model = build_qmodel(dep.graph)
    raw = (run / "firmware" / "run_firmware" / "images.bin").read_bytes()
    n = int.from_bytes(raw[:4], "little")
    q = np.frombuffer(raw[4:], np.int8).reshape(n, *(model.input_shape[i] for i in (2, 3, 1)))  # NHWC on the board
    images = ((q.astype(np.float32) - model.input_zp) * np.float32(model.input_scale)).transpose(0, 3, 1, 2)
    settings = FirmwareSettings(
        images=n, on_overflow="report", rounding=cfg.get("backend.rounding", "single"), profile=profile
    )
    with tempfile.TemporaryDirectory() as tmp:
        return make_firmware(dep, Device.from_config(device), tmp, images, settings)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--app":
        app(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=list(MODELS))
    ap.add_argument("--target", default="cortex_m0plus")
    ap.add_argument("--rounding", nargs="+", default=["single", "tflite"])
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--run", default=None, help="a pipeline run folder (backend=c): its own firmware again")
    args = ap.parse_args()
    import tinyflow

    print(f"kernels: {Path(tinyflow.__file__).parent / 'firmware' / 'templates' / 'tf_kernels.h'}")
    if args.run:
        plain, prof = rerun(Path(args.run), False), rerun(Path(args.run), True)
        kinds = {r["kind"]: r["instructions"] for r in prof.get("profile_by_kind") or []}
        print(
            f"{args.run}: {plain['target']} {plain['rounding']}: {plain['instructions_per_inference']:,} "
            f"instructions per inference ({plain['instructions_per_mac']:.2f} per MAC), bit-exact "
            f"{plain['bit_exact']}/{plain['images']}, stack {plain['stack_bytes']} B, flash {plain['flash_bytes']:,} B"
        )
        print("  per op kind (profiled build): " + ", ".join(f"{k} {v / 1e6:.3f}M" for k, v in kinds.items()))
        if args.json:
            Path(args.json).write_text(json.dumps({"plain": plain, "profile": prof}, indent=1, default=str))
        return
    rows = []
    for model in args.models:
        for rounding in args.rounding:
            res = measure(model, args.target, rounding, args.images)
            fw = res
            insns, exact = fw["instructions_per_inference"], fw["bit_exact"]
            kinds = {r["kind"]: r["instructions"] for r in fw.get("profile_by_kind") or []}
            rows.append(
                {
                    "model": model,
                    "target": args.target,
                    "rounding": rounding,
                    "instructions": insns,
                    "bit_exact": exact,
                    "images": fw["images"],
                    "macs": fw.get("macs"),
                    "kinds": kinds,
                }
            )
            per_kind = ", ".join(f"{k} {v / 1e6:.3f}M" for k, v in kinds.items())
            print(
                f"{Path(model).name:28s} {rounding:6s} {insns / 1e6:9.3f} M  bit-exact {exact}/{fw['images']}  "
                f"[{per_kind}]",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
