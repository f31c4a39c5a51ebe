"""RNNPool (Saha et al., 2020, arXiv 2002.11921): a learned pooling operator made of two small RNNs.

On every r×c patch of a feature map with f channels:
- RNN1 (hidden h1) reads each of the r rows left to right (c steps) and each of the c columns top to bottom
  (r steps); its final state is that row's / column's summary. One RNN1 is shared by rows and columns.
- RNN2 (hidden h2) reads the r row summaries forwards and backwards, and the c column summaries forwards and
  backwards. One RNN2 is shared by all four passes (as in the authors' implementation).
- The patch's output is the four final RNN2 states, concatenated: [rows→, rows←, cols→, cols←], 4·h2 channels.

Patches are taken with a stride (sr, sc) over the map zero-padded by (pr, pc) on each side, so the output is
``H_out = (H + 2·pr − r) // sr + 1`` (same for W). The default padding is ``(r − sr) // 2`` per dimension:
for the Visual Wake Words configuration (6×6 patches, stride 4) that is 1 pixel on every side and
112×112×8 maps to 28×28×32 (``(112 + 2 − 6) // 4 + 1 = 28``), each output pixel's patch centred on the 4×4
block it pools. Padding is zeros, applied only at the image border.

All patches are pooled in one batch: the patches are gathered with index tensors (exported to ONNX as
`Gather`), each RNN's input projection is one matrix product over all time steps, and only the h×h recurrence
is a (short, unrolled) loop. The ONNX export therefore uses only MatMul/Gemm, Gather, Sigmoid, Tanh, Mul,
Add, Sub, Concat, Reshape/Transpose and Pad.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from tinyflow.errors import ConfigError

CELLS = ("fastgrnn", "gru")


def _pair(value: int | tuple[int, int] | list[int], field: str) -> tuple[int, int]:
    if isinstance(value, int):
        pair = (value, value)
    else:
        pair = tuple(int(v) for v in value)
        if len(pair) != 2:
            raise ConfigError(f"rnnpool.{field} must be an int or a pair (rows, cols), got {value!r}.")
    return pair  # type: ignore[return-value]


class RNNCell(nn.Module):
    """A GRU-like cell run over a batch of sequences; `cell` is "fastgrnn" (default, as in the paper) or "gru".

    FastGRNN (Kusupati et al., 2018), with ζ = σ(ζ_raw), ν = σ(ν_raw) scalars::

        z  = σ(W x + U h + b_z)
        h~ = tanh(W x + U h + b_h)
        h' = (ζ·(1 − z) + ν) ⊙ h~ + z ⊙ h

    GRU (PyTorch's convention)::

        r  = σ(W_r x + b_ir + U_r h + b_hr)
        z  = σ(W_z x + b_iz + U_z h + b_hz)
        n  = tanh(W_n x + b_in + r ⊙ (U_n h + b_hn))
        h' = (1 − z) ⊙ n + z ⊙ h
    """

    def __init__(self, input_size: int, hidden_size: int, cell: str = "fastgrnn"):
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"rnnpool.cell must be one of {list(CELLS)}, got {cell!r}.")
        self.cell = cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        if cell == "fastgrnn":
            self.W = nn.Parameter(torch.empty(hidden_size, input_size).uniform_(-bound, bound))
            self.U = nn.Parameter(torch.empty(hidden_size, hidden_size).uniform_(-bound, bound))
            # zero biases: with the reference implementation's ones, tanh(· + 1) saturates and the pooled features
            # start almost constant across positions (per-channel std ~0.01), which BatchNorm after it learns slowly
            self.b_z = nn.Parameter(torch.zeros(hidden_size))
            self.b_h = nn.Parameter(torch.zeros(hidden_size))
            # the paper's initialisation: ζ ≈ 1, ν ≈ 0, so the cell starts as a plain gated RNN
            self.zeta = nn.Parameter(torch.tensor(3.0))
            self.nu = nn.Parameter(torch.tensor(-4.0))
        else:
            self.W = nn.Parameter(torch.empty(3 * hidden_size, input_size).uniform_(-bound, bound))
            self.U = nn.Parameter(torch.empty(3 * hidden_size, hidden_size).uniform_(-bound, bound))
            self.b_i = nn.Parameter(torch.empty(3 * hidden_size).uniform_(-bound, bound))
            self.b_h = nn.Parameter(torch.empty(3 * hidden_size).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, steps, input_size) -> final hidden state (batch, hidden_size), starting from zeros."""
        h_size = self.hidden_size
        steps = x.shape[1]
        xw = torch.matmul(x, self.W.t())  # all steps' input projections in one product
        h = x.new_zeros(x.shape[0], h_size)
        if self.cell == "fastgrnn":
            zeta, nu = torch.sigmoid(self.zeta), torch.sigmoid(self.nu)
            for t in range(steps):
                pre = xw[:, t] + torch.matmul(h, self.U.t())
                z = torch.sigmoid(pre + self.b_z)
                h_tilde = torch.tanh(pre + self.b_h)
                h = (zeta * (1.0 - z) + nu) * h_tilde + z * h
        else:
            xw = xw + self.b_i
            for t in range(steps):
                hu = torch.matmul(h, self.U.t()) + self.b_h
                xr, xz, xn = xw[:, t, :h_size], xw[:, t, h_size : 2 * h_size], xw[:, t, 2 * h_size :]
                r = torch.sigmoid(xr + hu[:, :h_size])
                z = torch.sigmoid(xz + hu[:, h_size : 2 * h_size])
                n = torch.tanh(xn + r * hu[:, 2 * h_size :])
                h = (1.0 - z) * n + z * h
        return h


class RNNPool(nn.Module):
    """Pool every (r, c) patch, taken with stride (sr, sc), into 4·hidden2 channels with two small RNNs."""

    def __init__(
        self,
        in_channels: int,
        hidden1: int,
        hidden2: int,
        patch: int | tuple[int, int] = 6,
        stride: int | tuple[int, int] = 4,
        padding: int | tuple[int, int] | None = None,
        cell: str = "fastgrnn",
    ):
        super().__init__()
        self.in_channels = int(in_channels)
        self.hidden1, self.hidden2 = int(hidden1), int(hidden2)
        self.patch = _pair(patch, "patch")
        self.stride = _pair(stride, "stride")
        if min(self.patch) < 1 or min(self.stride) < 1 or min(self.in_channels, self.hidden1, self.hidden2) < 1:
            raise ConfigError(
                f"rnnpool: patch {self.patch}, stride {self.stride}, in_channels {in_channels}, hidden1 {hidden1} "
                f"and hidden2 {hidden2} must all be positive."
            )
        if padding is None:
            padding = tuple(max(0, (k - s) // 2) for k, s in zip(self.patch, self.stride))
        self.padding = _pair(padding, "padding")
        if min(self.padding) < 0:
            raise ConfigError(f"rnnpool.padding must be >= 0, got {self.padding}.")
        self.cell = cell
        self.rnn1 = RNNCell(self.in_channels, self.hidden1, cell)
        self.rnn2 = RNNCell(self.hidden1, self.hidden2, cell)

    @property
    def out_channels(self) -> int:
        return 4 * self.hidden2

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output (H, W) for an input of (height, width); raises ConfigError when the map is smaller than a patch."""
        (r, c), (sr, sc), (pr, pc) = self.patch, self.stride, self.padding
        if height + 2 * pr < r or width + 2 * pc < c:
            raise ConfigError(
                f"rnnpool: a {height}x{width} map (padding {self.padding}) is smaller than one {r}x{c} patch; "
                "use a smaller rnnpool.patch or a larger input resolution."
            )
        return (height + 2 * pr - r) // sr + 1, (width + 2 * pc - c) // sc + 1

    def pool_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """patches: (B, r, c, f) channels-last -> (B, 4·h2)."""
        b, f = patches.shape[0], patches.shape[3]
        r, c = self.patch
        rows = patches.reshape(b * r, c, f)  # each row is a sequence of c pixels
        cols = patches.transpose(1, 2).reshape(b * c, r, f)  # each column is a sequence of r pixels
        if r == c:  # one batch for rows and columns (RNN1 is shared)
            summaries = self.rnn1(torch.cat([rows, cols], 0))
            row_sum, col_sum = summaries[: b * r].reshape(b, r, -1), summaries[b * r :].reshape(b, c, -1)
        else:
            row_sum, col_sum = self.rnn1(rows).reshape(b, r, -1), self.rnn1(cols).reshape(b, c, -1)
        if r == c:
            seqs = torch.cat([row_sum, row_sum.flip(1), col_sum, col_sum.flip(1)], 0)
            out = self.rnn2(seqs).reshape(4, b, self.hidden2)
        else:
            out_r = self.rnn2(torch.cat([row_sum, row_sum.flip(1)], 0)).reshape(2, b, self.hidden2)
            out_c = self.rnn2(torch.cat([col_sum, col_sum.flip(1)], 0)).reshape(2, b, self.hidden2)
            out = torch.cat([out_r, out_c], 0)
        return out.permute(1, 0, 2).reshape(b, 4 * self.hidden2)

    def extract_patches(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, f, H, W) -> (N, Ho, Wo, r, c, f), zero padding at the border."""
        n, f, height, width = x.shape
        ho, wo = self.output_size(height, width)
        (r, c), (sr, sc), (pr, pc) = self.patch, self.stride, self.padding
        if pr or pc:
            x = F.pad(x, (pc, pc, pr, pr))
        ri = (torch.arange(ho, device=x.device) * sr).unsqueeze(1) + torch.arange(r, device=x.device)  # (Ho, r)
        ci = (torch.arange(wo, device=x.device) * sc).unsqueeze(1) + torch.arange(c, device=x.device)  # (Wo, c)
        x = x[:, :, ri.reshape(-1)].reshape(n, f, ho, r, -1)  # gather rows
        x = x[..., ci.reshape(-1)].reshape(n, f, ho, r, wo, c)  # gather columns
        return x.permute(0, 2, 4, 3, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"RNNPool expects (N, {self.in_channels}, H, W) input, got {tuple(x.shape)}; check the channels "
                "of the layer before it."
            )
        n = x.shape[0]
        patches = self.extract_patches(x)
        ho, wo = patches.shape[1], patches.shape[2]
        pooled = self.pool_patches(patches.reshape(n * ho * wo, *self.patch, self.in_channels))
        return pooled.reshape(n, ho, wo, self.out_channels).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, h1={self.hidden1}, h2={self.hidden2}, patch={self.patch}, "
            f"stride={self.stride}, padding={self.padding}, cell={self.cell}"
        )
