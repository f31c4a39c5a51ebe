"""How wide an accuracy's interval is for a number of test canvases: one deployed int8 model, scored per canvas.

Takes a finished run (its `model_int8.onnx` and the arch's resolution from `context.json`), scores the int8 model
with onnxruntime on every canvas of the test split (`data.eval_copies` canvases per held-apart digit, copy-major),
and prints, for the first n canvases (whole copies of every digit), the accuracy, its 95 % Wilson interval and
the interval's half-width (`tinyflow.confidence`), and the standard error sqrt(p(1-p)/n).

    .venv/bin/python benchmarks/bench_eval_size.py --run outputs/runs/<run> [--sizes 500,1000,2000,4000] [override ...]

Overrides are Hydra overrides of the pipeline's config (the data the run used; the default data by default).
Last line: `test canvases for a standard error <= 0.5 points: <n>`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

import tinyflow
from tinyflow.confidence import wilson
from tinyflow.deploy.onnx_export import run_onnx, session
from tinyflow.deploy.quantize import collect_images
from tinyflow.plugins import build_plugin


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path, help="a finished run's output folder")
    p.add_argument("--sizes", default="500,1000,2000,4000,5000")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=["tracking=none", *args.overrides])
    context = json.loads((args.run / "context.json").read_text())
    resolution = int(context["arch"]["resolution"])
    data = build_plugin(cfg, "data")
    data.set_resolution(resolution)
    data.setup()
    images, labels = collect_images(data.test_dataloader())
    logits = run_onnx(session(args.run / "model_int8.onnx", 1), images)
    correct = np.argmax(logits, axis=1) == labels
    print(f"{args.run / 'model_int8.onnx'} at {resolution}², {len(correct)} test canvases\n")
    print("| test canvases | int8 accuracy | 95 % CI (Wilson) | half-width | standard error |")
    print("| ---: | ---: | --- | ---: | ---: |")
    first = None
    for n in (int(s) for s in args.sizes.split(",")):
        if n > len(correct):
            continue
        k = int(correct[:n].sum())
        low, high = wilson(k, n)
        half = 100 * (high - low) / 2
        se = 100 * (k / n * (1 - k / n) / n) ** 0.5
        print(f"| {n} | {100 * k / n:.2f} % | {100 * low:.1f}–{100 * high:.1f} % | ±{half:.2f} | {se:.2f} |")
        if first is None and se <= 0.5:
            first = n
    print(f"\ntest canvases for a standard error <= 0.5 points: {first or 'more than ' + args.sizes}")


if __name__ == "__main__":
    main()
