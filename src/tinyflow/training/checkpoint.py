"""Checkpoints written atomically (temp file + rename) and read back with a clear error when corrupt."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn

from tinyflow.atomic import atomic_open
from tinyflow.errors import CheckpointError


def save_checkpoint(obj: Any, path: str | os.PathLike[str]) -> Path:
    """`torch.save(obj)` so that readers see the old file or the whole new one, never a torn write."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
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
    """`model.pt`: the state_dict of a `StaticNet` with its arch as JSON (enough to rebuild it), atomically.

    A network that rewrites the arch (an `RNNPoolNet`) also records how (`network_json`, see `network_spec`)."""
    payload = {
        "format": MODEL_FORMAT,
        "arch_json": arch.to_json(),
        **({"network_json": json.dumps(spec)} if (spec := network_spec(model)) else {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
    }
    return save_checkpoint(payload, path)


def load_static_model(path: str | os.PathLike[str]) -> tuple[nn.Module, Any, dict[str, float]]:
    """Rebuild `(model, Arch, metrics)` from a `model.pt` (a `StaticNet`, or the `RNNPoolNet` it records);
    CheckpointError when it is corrupt or foreign."""
    from tinyflow.arch.genome import Arch

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
    model = build_network(arch, read_network_spec(payload, path))
    load_weights(model, payload["state_dict"], source=str(path))
    model.eval()
    return model, arch, dict(payload.get("metrics", {}))


def network_spec(model: nn.Module) -> dict[str, Any] | None:
    """How `model` differs from `StaticNet(arch)`: `{"kind": "rnnpool", "options": {...}}` for an `RNNPoolNet`
    (its resolved options), None for a plain static network."""
    rarch = getattr(model, "rnnpool_arch", None)
    if rarch is None:
        return None
    return {"kind": "rnnpool", "options": rarch.options()}


def read_network_spec(payload: Any, source: Any = "checkpoint") -> dict[str, Any] | None:
    """The `network_spec` a model.pt payload records (None: a `StaticNet`)."""
    raw = payload.get("network_json") if isinstance(payload, dict) else None
    if raw is None:
        return None
    try:
        spec = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: the stored network spec is not JSON ({exc})") from None
    if not isinstance(spec, dict) or spec.get("kind") != "rnnpool":
        raise CheckpointError(f"{source}: unknown network kind in the stored spec {spec!r} (known: rnnpool)")
    return spec


def build_network(arch: Any, spec: dict[str, Any] | None, dropout: float = 0.0) -> nn.Module:
    """The untrained network a model.pt describes: `StaticNet(arch)`, or `RNNPoolNet` for an rnnpool spec."""
    if spec is None:
        from tinyflow.nn.static import StaticNet

        return StaticNet(arch, dropout=dropout)
    from tinyflow.nn.rnnpool_net import RNNPoolNet

    return RNNPoolNet.from_arch(arch, spec["options"], dropout=dropout)
