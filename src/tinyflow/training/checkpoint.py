"""Checkpoints written atomically (temp file + rename) and read back with a clear error when corrupt."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn

from tinyflow.errors import CheckpointError


def save_checkpoint(obj: Any, path: str | os.PathLike[str]) -> Path:
    """`torch.save(obj)` so that readers see the old file or the whole new one, never a torn write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike[str], weights_only: bool = False) -> Any:
    """`torch.load` on CPU; CheckpointError naming the file when it is missing, truncated or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path or rerun the stage that writes it")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a PyTorch checkpoint ({type(exc).__name__}: {exc}). "
            "Delete it and rerun the stage that writes it (or turn resume off)."
        ) from None


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """`model.load_state_dict(strict=True)`, with a CheckpointError that says which keys / shapes differ."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[:4])
        raise CheckpointError(
            f"{source}: weights do not fit this network ({detail}). The checkpoint was written for another arch "
            "or data (classes / input channels); use the matching arch or train from scratch."
        ) from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes via temp file + rename and raises CheckpointError on a bad file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(path, weights_only=bool(weights_only))


MODEL_FORMAT = "tinyflow.static_model/1"


def save_static_model(
    path: str | os.PathLike[str], model: nn.Module, arch: Any, metrics: dict[str, float] | None = None
) -> Path:
    """`model.pt`: the state_dict of a `StaticNet` with its arch as JSON (enough to rebuild it), atomically."""
    payload = {
        "format": MODEL_FORMAT,
        "arch_json": arch.to_json(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
    }
    return save_checkpoint(payload, path)


def load_static_model(path: str | os.PathLike[str]) -> tuple[nn.Module, Any, dict[str, float]]:
    """Rebuild `(StaticNet, Arch, metrics)` from a `model.pt`; CheckpointError when it is corrupt or foreign."""
    from tinyflow.arch.genome import Arch
    from tinyflow.nn.static import StaticNet

    payload = load_checkpoint(path, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise CheckpointError(
            f"{path} is not a tinyflow model checkpoint (expected format {MODEL_FORMAT}); it should be the "
            "model.pt written by the finetune stage or the standalone trainer"
        )
    try:
        arch = Arch.from_json(payload["arch_json"])
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: the stored arch is invalid ({exc})") from None
    model = StaticNet(arch)
    load_weights(model, payload["state_dict"], source=str(path))
    model.eval()
    return model, arch, dict(payload.get("metrics", {}))
