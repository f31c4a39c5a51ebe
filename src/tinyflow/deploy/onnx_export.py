"""Export a static PyTorch network to a clean float ONNX file, and check the file against PyTorch."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from tinyflow.atomic import atomic_path
from tinyflow.errors import TinyflowError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class OnnxCheckError(TinyflowError):
    """The exported ONNX model does not compute what the PyTorch model computes."""


def export_onnx(
    model: torch.nn.Module, input_shape: tuple[int, ...], path: str | os.PathLike[str], opset: int = 17
) -> Path:
    """Export `model` (eval mode, BatchNorm folded) to `path` with a dynamic batch axis; written atomically.

    The TorchScript exporter is used because it folds BatchNorm into the convs in a fraction of a second and
    yields one Conv per conv layer, which is what the int8 quantizer and the memory engine's importer expect.
    """
    path = Path(path)
    was_training = model.training
    model.eval()
    example = torch.zeros(1, *input_shape[1:], dtype=torch.float32)
    try:
        with atomic_path(path, ".onnx") as tmp:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    do_constant_folding=True,
                )
            proto = onnx.load(tmp)
            _inline_shared_initializers(proto)
            onnx.checker.check_model(proto)
            onnx.save(proto, tmp)
    finally:
        model.train(was_training)
    return path


def _inline_shared_initializers(proto: onnx.ModelProto) -> None:
    """Replace `Identity(initializer)` and `Constant` nodes with plain initializers.

    The exporter deduplicates equal tensors (e.g. zero biases of untrained layers) and then reads them through
    Identity nodes; every conv having its own weight and bias initializer keeps the graph simple for the
    quantizer and for counting flash.
    """
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            inits[copy.name] = copy
        elif node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            inits[tensor.name] = tensor
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    unused = [t for t in graph.initializer if t.name not in used]
    for t in unused:
        graph.initializer.remove(t)


def session(path: str | os.PathLike[str], threads: int = 1) -> Any:
    """An onnxruntime CPU inference session with a fixed thread count (deterministic, fair latency)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(sess: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits of `images` (N, C, H, W float32) from an onnxruntime session, in batches."""
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: images[i : i + batch_size]})[0] for i in range(0, len(images), batch_size)]
    return np.concatenate(outs, axis=0)


def check_onnx_against_torch(
    model: torch.nn.Module,
    onnx_path: str | os.PathLike[str],
    input_shape: tuple[int, ...],
    n_inputs: int = 100,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> dict[str, float]:
    """Run `n_inputs` seeded random inputs through PyTorch and the ONNX file; raise `OnnxCheckError` naming the
    measured max abs difference when it exceeds `tolerance`. Returns the measured figures."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n_inputs, *input_shape[1:], generator=gen)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        expected = model(images).numpy()
    model.train(was_training)
    got = run_onnx(session(onnx_path), images.numpy())
    diff = float(np.max(np.abs(expected - got)))
    scale = float(np.max(np.abs(expected)))
    if not np.isfinite(diff) or diff > tolerance:
        raise OnnxCheckError(
            f"ONNX check failed: {onnx_path} differs from the PyTorch model by max abs {diff:.3g} over {n_inputs} "
            f"inputs (tolerance {tolerance:g}; logits up to {scale:.3g}). The exported file does not compute what "
            "was trained: re-run the `quantize` stage to re-export it, or raise `backend.check_tolerance` only if "
            "the difference is explained."
        )
    return {"onnx_max_abs_diff": diff, "onnx_check_inputs": float(n_inputs), "onnx_check_tolerance": tolerance}


def initializer_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The weights stored in an ONNX file, by name."""
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
