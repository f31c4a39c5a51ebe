"""TF Lite Micro's arena for .tflite files, measured with the `tflite-micro` wheel (host build), one inference:

    /work/tfenv/bin/python tests/data/models/measure_tflm.py model.tflite [...]

prints per file: arena total, head (non-persistent: activations) and tail (persistent), from `print_allocations()`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

CHILD = """
import sys, numpy as np
from tflite_micro.python.tflite_micro import runtime
it = runtime.Interpreter.from_file(sys.argv[1], arena_size=8 << 20)
d = it.get_input_details(0)
it.set_input(np.zeros(d["shape"], d["dtype"]), 0)
it.invoke()
it.print_allocations()
"""


def measure(path: str) -> dict[str, int]:
    """Run one inference in a child process (print_allocations writes to the C stdout) and parse its report."""
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "child.py")
        with open(script, "w") as f:
            f.write(CHILD)
        res = subprocess.run([sys.executable, script, path], capture_output=True, text=True, check=True)
        out = res.stdout + res.stderr
    nums = {k: int(v) for k, v in re.findall(r"\[RecordingMicroAllocator\] Arena allocation (\w+) (\d+) bytes", out)}
    return {"total": nums["total"], "head": nums["head"], "tail": nums["tail"]}


if __name__ == "__main__":
    for p in sys.argv[1:]:
        r = measure(p)
        print(f"{os.path.basename(p)}\ttotal {r['total']}\thead {r['head']}\ttail {r['tail']}", flush=True)
