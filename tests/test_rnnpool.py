"""RNNPool: the batched operator against an explicit per-patch loop, ONNX export, shapes, memory plans."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tinyflow.errors import ConfigError
from tinyflow.nn.rnnpool import RNNPool


# ---------------------------------------------------------------- slow, obviously-correct reference
def _sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _cell_step(cell, x: list[float], h: list[float]) -> list[float]:
    """One step of the cell written out scalar by scalar from the documented equations."""
    W = cell.W.detach().double().tolist()
    U = cell.U.detach().double().tolist()
    hs = cell.hidden_size
    if cell.cell == "fastgrnn":
        zeta, nu = _sig(float(cell.zeta)), _sig(float(cell.nu))
        new = []
        for k in range(hs):
            pre = sum(W[k][i] * x[i] for i in range(len(x))) + sum(U[k][j] * h[j] for j in range(hs))
            z = _sig(pre + float(cell.b_z[k]))
            cand = math.tanh(pre + float(cell.b_h[k]))
            new.append((zeta * (1 - z) + nu) * cand + z * h[k])
        return new
    bi, bh = cell.b_i.detach().double().tolist(), cell.b_h.detach().double().tolist()

    def lin(M, v, row):
        return sum(M[row][i] * v[i] for i in range(len(v)))

    new = []
    for k in range(hs):
        r = _sig(lin(W, x, k) + bi[k] + lin(U, h, k) + bh[k])
        z = _sig(lin(W, x, hs + k) + bi[hs + k] + lin(U, h, hs + k) + bh[hs + k])
        n = math.tanh(lin(W, x, 2 * hs + k) + bi[2 * hs + k] + r * (lin(U, h, 2 * hs + k) + bh[2 * hs + k]))
        new.append((1 - z) * n + z * h[k])
    return new


def _run(cell, seq: list[list[float]]) -> list[float]:
    h = [0.0] * cell.hidden_size
    for x in seq:
        h = _cell_step(cell, x, h)
    return h


def reference_rnnpool(op: RNNPool, x: torch.Tensor) -> torch.Tensor:
    """Per image, per output pixel, per row and column: explicit loops over a zero-padded map."""
    n, f, height, width = x.shape
    (r, c), (sr, sc), (pr, pc) = op.patch, op.stride, op.padding
    ho, wo = (height + 2 * pr - r) // sr + 1, (width + 2 * pc - c) // sc + 1
    out = torch.zeros(n, 4 * op.hidden2, ho, wo, dtype=torch.float64)
    xd = x.double()

    def pixel(b: int, i: int, j: int) -> list[float]:
        if 0 <= i < height and 0 <= j < width:
            return xd[b, :, i, j].tolist()
        return [0.0] * f

    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                top, left = oy * sr - pr, ox * sc - pc
                rows = [_run(op.rnn1, [pixel(b, top + i, left + j) for j in range(c)]) for i in range(r)]
                cols = [_run(op.rnn1, [pixel(b, top + i, left + j) for i in range(r)]) for j in range(c)]
                parts = [_run(op.rnn2, rows), _run(op.rnn2, rows[::-1]), _run(op.rnn2, cols), _run(op.rnn2, cols[::-1])]
                out[b, :, oy, ox] = torch.tensor([v for p in parts for v in p], dtype=torch.float64)
    return out


def _randomize(op: RNNPool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in op.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.6)


@pytest.mark.parametrize(
    ("cell", "patch", "stride", "padding", "size"),
    [
        ("fastgrnn", 4, 2, None, (9, 10)),
        ("gru", 3, 2, 1, (7, 7)),
        ("fastgrnn", (3, 4), (2, 3), (0, 1), (8, 9)),
        ("gru", (4, 2), (1, 2), 0, (6, 5)),
    ],
)
def test_matches_reference_loop(cell, patch, stride, padding, size):
    torch.manual_seed(0)
    op = RNNPool(3, hidden1=4, hidden2=3, patch=patch, stride=stride, padding=padding, cell=cell)
    _randomize(op, 1)
    x = torch.randn(2, 3, *size)
    got = op(x).double()
    want = reference_rnnpool(op, x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_vww_shape_mapping():
    op = RNNPool(8, hidden1=8, hidden2=8, patch=6, stride=4)
    assert op.padding == (1, 1)
    assert op.output_size(112, 112) == (28, 28)
    y = op(torch.randn(1, 8, 112, 112))
    assert tuple(y.shape) == (1, 32, 28, 28)


def test_bad_input_is_a_clear_error():
    op = RNNPool(8, 8, 8, patch=6, stride=4)
    with pytest.raises(ConfigError, match="expects"):
        op(torch.randn(1, 3, 16, 16))
    with pytest.raises(ConfigError, match="smaller than one"):
        op.output_size(3, 3)
    with pytest.raises(ConfigError, match="cell"):
        RNNPool(8, 8, 8, cell="lstm")


def test_gradients_reach_every_parameter():
    op = RNNPool(3, 4, 4, patch=4, stride=2)
    op(torch.randn(2, 3, 8, 8)).square().mean().backward()
    for name, p in op.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("cell", "dynamo"), [pytest.param("fastgrnn", True, marks=pytest.mark.slow), ("gru", False)])
def test_onnx_export_matches_pytorch(tmp_path, cell, dynamo):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    torch.manual_seed(0)
    op = RNNPool(8, hidden1=8, hidden2=8, patch=6, stride=4, cell=cell).eval()
    _randomize(op, 2)
    x = torch.randn(2, 8, 32, 32)
    path = tmp_path / "rnnpool.onnx"
    torch.onnx.export(op, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=dynamo, opset_version=18)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = {node.op_type for node in model.graph.node}
    assert not ops & {"GRU", "RNN", "LSTM", "Loop", "Scan"}, ops  # plain ops only
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y_ort = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        y = op(x).numpy()
    np.testing.assert_allclose(y_ort, y, atol=1e-5, rtol=1e-5)
