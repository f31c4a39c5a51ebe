"""The one reader of supernet checkpoints (and the format the `ofa` trainer writes them in).

A supernet checkpoint is a Lightning checkpoint whose `state_dict` holds the supernet's weights under the prefix
`supernet.` and whose `tinyflow_supernet` entry records what rebuilds it without the trainer plugin: `space`
(`space_to_dict`), `stem` (the supernet's `stem_config`; absent in checkpoints from before the RNNPool stem = conv),
`dropout`, and `evaluation` (`recalib_batches`, `seed`: how subnets are BatchNorm-recalibrated; absent = 4, 0),
besides the trainer's own progress entries (phases, epochs done, history).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tinyflow.errors import CheckpointError
from tinyflow.nn.elastic import ElasticSupernet, space_from_dict

CKPT_KEY = "tinyflow_supernet"
PREFIX = "supernet."
DEFAULT_RECALIB_BATCHES = 4


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
            "Give the checkpoint written by a supernet trainer (trainer=ofa)."
        )
    return ckpt


def meta(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's `tinyflow_supernet` entry."""
    return dict(ckpt[CKPT_KEY])


def stem_of(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The supernet's stem config recorded in a checkpoint (`ElasticSupernet` keywords; conv when absent)."""
    return dict(ckpt[CKPT_KEY].get("stem") or {"stem": "conv"})


def evaluation_of(ckpt: dict[str, Any]) -> dict[str, int]:
    """How the trainer recalibrated subnets (`recalib_batches`, `seed`), as recorded (defaults 4 and 0)."""
    recorded = ckpt[CKPT_KEY].get("evaluation") or {}
    return {
        "recalib_batches": int(recorded.get("recalib_batches", DEFAULT_RECALIB_BATCHES)),
        "seed": int(recorded.get("seed", 0)),
    }


def supernet_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The supernet's own state dict (the `supernet.` entries, prefix removed)."""
    return {k[len(PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(PREFIX)}


def build_supernet(ckpt: dict[str, Any], source: str | os.PathLike[str] = "checkpoint") -> ElasticSupernet:
    """The trained supernet of a checkpoint dict (`read_checkpoint`), in eval mode."""
    entry = ckpt[CKPT_KEY]
    net = ElasticSupernet(space_from_dict(entry["space"]), dropout=float(entry.get("dropout", 0.0)), **stem_of(ckpt))
    try:
        net.load_state_dict(supernet_state(ckpt))
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: the weights do not fit the recorded space ({str(exc)[:300]})") from None
    return net.eval()


def load_supernet(path: str | os.PathLike[str]) -> ElasticSupernet:
    """Rebuild the trained supernet of a checkpoint file (eval mode)."""
    return build_supernet(read_checkpoint(path), path)
