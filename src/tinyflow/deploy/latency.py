"""Host latency of an ONNX model under onnxruntime: median of N timed single-image runs."""

from __future__ import annotations

import os
import time

import numpy as np

from tinyflow.deploy.onnx_export import session
from tinyflow.errors import ConfigError


def host_latency(
    path: str | os.PathLike[str], input_shape: tuple[int, ...], runs: int = 100, warmup: int = 10, threads: int = 1
) -> dict[str, float | list[float]]:
    """Time `runs` batch-1 inferences after `warmup` untimed ones; milliseconds."""
    if runs < 1 or warmup < 0:
        raise ConfigError(
            f"backend.latency_runs = {runs}, backend.latency_warmup = {warmup}: need runs ≥ 1, warmup ≥ 0."
        )
    sess = session(path, threads)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, *input_shape[1:])).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - start) * 1e3)
    arr = np.asarray(times)
    return {
        "median_ms": float(np.median(arr)),
        "p90_ms": float(np.percentile(arr, 90)),
        "min_ms": float(arr.min()),
        "runs_ms": times,
    }
