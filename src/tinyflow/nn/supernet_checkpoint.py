"""Reading a trained supernet back from its checkpoint, and extracting a subnet from it (finetune, search).

A supernet checkpoint is a Lightning checkpoint whose `state_dict` holds the supernet's weights under the
prefix `supernet.` and whose `tinyflow_supernet` entry records the space and the stem (`stem`: the supernet's
`stem_config`, absent in checkpoints from before the RNNPool stem = conv), so core code can rebuild the supernet
without the trainer plugin.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from tinyflow.arch.genome import Arch
from tinyflow.errors import CheckpointError
from tinyflow.nn.calibration import recalibrate_bn
from tinyflow.nn.elastic import ElasticSupernet, space_from_dict
from tinyflow.nn.rnnpool_net import RNNPoolNet
from tinyflow.nn.static import StaticNet

CKPT_KEY = "tinyflow_supernet"
PREFIX = "supernet."


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a supernet checkpoint dict; `CheckpointError` if it is missing, unreadable or not a supernet's."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"supernet checkpoint {path} does not exist. Run the `train` stage first (or point "
            "ctx.supernet_checkpoint / trainer.resume at an existing run)."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"supernet checkpoint {path} is corrupt or truncated and cannot be read ({type(exc).__name__}: "
            f"{str(exc)[:200]}). Delete it and train again (or resume from an earlier copy)."
        ) from None
    if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a tinyflow supernet checkpoint (no '{CKPT_KEY}' / 'state_dict' entries). "
            "Give the checkpoint written by the `ofa` trainer."
        )
    return ckpt


def stem_of(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The supernet's stem config recorded in a checkpoint (`ElasticSupernet` keywords; conv when absent)."""
    return dict(ckpt[CKPT_KEY].get("stem") or {"stem": "conv"})


def supernet_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The supernet's own state dict (the `supernet.` entries, prefix removed)."""
    return {k[len(PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(PREFIX)}


def load_supernet(path: str | os.PathLike[str]) -> ElasticSupernet:
    """Rebuild the trained supernet of a checkpoint (eval mode)."""
    ckpt = read_checkpoint(path)
    meta = ckpt[CKPT_KEY]
    net = ElasticSupernet(space_from_dict(meta["space"]), dropout=float(meta.get("dropout", 0.0)), **stem_of(ckpt))
    try:
        net.load_state_dict(supernet_state(ckpt))
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the weights do not fit the recorded space ({str(exc)[:300]})") from None
    return net.eval()


def extract_subnet(
    path: str | os.PathLike[str],
    arch: Arch | dict[str, Any],
    calibration: Iterable[torch.Tensor] | None = None,
) -> StaticNet | RNNPoolNet:
    """The static network of `arch` with the supernet checkpoint's weights, ready for fine-tuning (an `RNNPoolNet`
    when the supernet has an RNNPool stem).

    `calibration` (input batches) re-estimates its BatchNorm statistics first, as a subnet's running statistics
    in the supernet belong to whichever subnet ran last. `arch` may be an `Arch` or `Arch.to_dict()`.
    """
    if isinstance(arch, dict):
        arch = Arch.from_dict(arch)
    net = load_supernet(path).extract(arch)
    if calibration is not None:
        recalibrate_bn(net, calibration)
    return net.eval()
