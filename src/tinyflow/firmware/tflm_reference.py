"""TF Lite Micro's outputs for the inputs a firmware run used, to compare the two in int8 steps.

Run with a Python that has the `tflite-micro` wheel (in the test extras: `pip install -e ".[test]"`), e.g.
    .venv/bin/python src/tinyflow/firmware/tflm_reference.py model.tflite <firmware>/run_firmware
It reads images.bin (a uint32 count, then the int8 NHWC images: the firmware's input order, which is TF Lite's)
and output.bin (each image's int8 output and 4 bytes of instructions, then a 16-byte end-of-run record), runs every
image through TF Lite Micro's interpreter and prints one JSON line: images, max |difference| in int8 steps, how
many outputs are equal, top-1 agreement. Imports only numpy and tflite_micro. `make_firmware` calls
`tflm_outputs` in-process for a .tflite model without an .onnx twin when the wheel is importable (`tflm_available`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def tflm_available() -> bool:
    """Whether the `tflite-micro` wheel is importable here."""
    import importlib.util

    try:
        return importlib.util.find_spec("tflite_micro") is not None
    except (ImportError, ValueError):
        return False


def tflm_outputs(model: str | Path, x_nhwc: np.ndarray) -> np.ndarray:
    """TF Lite Micro's int8 outputs for int8 NHWC inputs (the firmware's input order), image by image."""
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_file(str(model), arena_size=8 * 1024 * 1024)
    in_detail = interp.get_input_details(0)
    shape = tuple(int(d) for d in in_detail["shape"])
    outs = []
    for image in np.asarray(x_nhwc).reshape(len(x_nhwc), -1):
        interp.set_input(image.reshape(shape).astype(in_detail["dtype"]), 0)
        interp.invoke()
        outs.append(np.asarray(interp.get_output(0)).reshape(-1))
    return np.stack(outs)


def main(model: str, run_dir: str) -> dict:
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_file(model, arena_size=8 * 1024 * 1024)
    in_detail = interp.get_input_details(0)
    out_detail = interp.get_output_details(0)
    shape = tuple(int(d) for d in in_detail["shape"])
    n_in = int(np.prod(shape))
    n_out = int(np.prod(out_detail["shape"]))
    x = np.fromfile(Path(run_dir) / "images.bin", np.int8)[4:].reshape(-1, n_in)
    ours = np.fromfile(Path(run_dir) / "output.bin", np.int8)[:-16].reshape(len(x), n_out + 4)[:, :n_out]
    theirs = np.empty_like(ours)
    for i, image in enumerate(x):
        interp.set_input(image.reshape(shape).astype(in_detail["dtype"]), 0)
        interp.invoke()
        theirs[i] = interp.get_output(0).reshape(-1)
    diff = np.abs(ours.astype(np.int32) - theirs.astype(np.int32))
    return {
        "model": Path(model).name,
        "images": len(x),
        "max_diff_steps": int(diff.max()),
        "equal_outputs": int((diff == 0).all(axis=1).sum()),
        "equal_values": float((diff == 0).mean()),
        "top1_agreement": float((ours.argmax(1) == theirs.argmax(1)).mean()),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
