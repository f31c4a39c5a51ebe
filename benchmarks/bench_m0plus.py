"""Instructions per inference of the firmware built for the Cortex-M0+ (Armv6-M, no DSP), per op kind.

Runs `python -m tinyflow.firmware` (conf/firmware.yaml) with `firmware.profile=true output=json` on int8 model
files for `--target` (default cortex_m0plus: `-mcpu=cortex-m0plus`, run on qemu's M3 board mps2-an385) under each
`--rounding`, and prints the whole-inference instructions (median over the images), bit-exactness against the
oracle and the instructions per op kind (the profile's rows). The kernels measured are the ones importable as
`tinyflow` (run it once with PYTHONPATH pointing at another checkout's `src` for a before / after table).

    .venv/bin/python benchmarks/bench_m0plus.py [MODEL ...] [--rounding single tflite] [--target cortex_m0plus]
        [--images 10] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("tests/data/models/kws_ref_model.tflite", "tests/data/models/person_detect.tflite")
# GCC puts Thumb-1 inline assembly in divided syntax, where the harness's `subs rX, rX, #1` does not assemble
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
    args = ap.parse_args()
    import tinyflow

    print(f"kernels: {Path(tinyflow.__file__).parent / 'firmware' / 'templates' / 'tf_kernels.h'}")
    rows = []
    for model in args.models:
        for rounding in args.rounding:
            res = measure(model, args.target, rounding, args.images)
            fw = res
            insns, exact = fw["instructions_per_inference"], fw["bit_exact"]
            kinds = {r["kind"]: r["instructions"] for r in fw.get("profile_by_kind") or []}
            rows.append({"model": model, "target": args.target, "rounding": rounding, "instructions": insns,
                         "bit_exact": exact, "images": fw["images"], "macs": fw.get("macs"), "kinds": kinds})
            per_kind = ", ".join(f"{k} {v / 1e6:.3f}M" for k, v in kinds.items())
            print(f"{Path(model).name:28s} {rounding:6s} {insns / 1e6:9.3f} M  bit-exact {exact}/{fw['images']}  "
                  f"[{per_kind}]", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
