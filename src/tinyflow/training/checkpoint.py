"""Checkpoints written atomically (temp file + rename) and read back with a clear error when corrupt, and the one
reader of model checkpoints (`read_model` / `load_model`: weights + the `DeployedNetwork` they belong to)."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn

from tinyflow.atomic import atomic_open
from tinyflow.errors import CheckpointError, ConfigError
from tinyflow.network import DeployedNetwork
from tinyflow.training.profile import phase


def save_checkpoint(obj: Any, path: str | os.PathLike[str]) -> Path:
    """`torch.save(obj)` so that readers see the old file or the whole new one, never a torn write."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
    return path


def load_checkpoint(path: str | os.PathLike[str], weights_only: bool = True) -> Any:
    """`torch.load(weights_only=True)` on CPU — tensors and plain containers only, so a checkpoint cannot run code
    while it is read; CheckpointError naming the file when it is missing, truncated, not a checkpoint, or holds
    objects that would need code to rebuild."""
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
        with phase("checkpoint"):
            save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        """Always `weights_only=True` (what tinyflow's trainers save is plain data), whatever the caller asks."""
        return load_checkpoint(path, weights_only=True)


MODEL_FORMAT = "tinyflow.static_model/1"


def network_of(model: nn.Module, arch: Any) -> DeployedNetwork:
    """The `DeployedNetwork` a trained model is: `rnnpool` with its resolved options for an `RNNPoolNet` (it has
    `rnnpool_arch`), else the plain network of `arch`."""
    rarch = getattr(model, "rnnpool_arch", None)
    if rarch is None:
        return DeployedNetwork.plain(arch)
    return DeployedNetwork("rnnpool", arch.to_dict(), rarch.options())


def save_model(
    path: str | os.PathLike[str], model: nn.Module, network: DeployedNetwork, metrics: dict[str, float] | None = None
) -> Path:
    """`model.pt`, atomically: the model's state_dict, the network it is (`network_json`: `DeployedNetwork.to_dict()`,
    enough to rebuild it) and its arch as JSON (`arch_json`, for readers of the arch alone)."""
    payload = {
        "format": MODEL_FORMAT,
        "arch_json": network.to_arch().to_json(),
        "network_json": json.dumps(network.to_dict()),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
    }
    return save_checkpoint(payload, path)


def save_static_model(
    path: str | os.PathLike[str], model: nn.Module, arch: Any, metrics: dict[str, float] | None = None
) -> Path:
    """`save_model` for a model of `arch` (its network read off the model: `network_of`)."""
    return save_model(path, model, network_of(model, arch), metrics)


@dataclass
class ModelFile:
    """What a model checkpoint holds: the weights (keys as the file has them), the network they belong to (None for
    a bare state_dict or Lightning checkpoint) and the metrics recorded with them."""

    state_dict: dict[str, torch.Tensor]
    network: DeployedNetwork | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tinyflow_format: bool = False  # written by `save_model` (not a foreign state_dict)


def read_model(path: str | os.PathLike[str]) -> ModelFile:
    """The one reader of model checkpoints: a tinyflow `model.pt` (`save_model`, or older ones whose `network_json`
    held only kind + options), `{"state_dict", "arch"}`, a Lightning checkpoint or a plain state_dict.
    CheckpointError naming the file when it is missing, corrupt or holds no tensors."""
    payload = load_checkpoint(path, weights_only=True)
    if isinstance(payload, dict) and "state_dict" in payload:
        state = payload["state_dict"]
        network = _network(payload, path)
        metrics = {k: float(v) for k, v in (payload.get("metrics") or {}).items()}
        tinyflow_format = payload.get("format") == MODEL_FORMAT
    else:
        state, network, metrics, tinyflow_format = payload, None, {}, False
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds no state_dict of tensors; give a model.pt, .ckpt or state_dict file")
    return ModelFile(dict(state), network, metrics, tinyflow_format)


def _network(payload: dict[str, Any], source: Any) -> DeployedNetwork | None:
    from tinyflow.arch.genome import Arch

    arch = payload.get("arch", payload.get("arch_json"))
    try:
        arch_dict = Arch.from_json(arch).to_dict() if isinstance(arch, str) else arch
        if arch_dict is not None:
            Arch.from_dict(arch_dict)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{source}: the stored arch is invalid ({exc})") from None
    raw = payload.get("network_json")
    if raw is None:
        return None if arch_dict is None else DeployedNetwork("static", dict(arch_dict))
    try:
        spec = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: the stored network description is not JSON ({exc})") from None
    if not isinstance(spec, dict) or "kind" not in spec:
        raise CheckpointError(f"{source}: the stored network description {spec!r} has no kind")
    if "arch" not in spec:  # written before model.pt recorded the whole DeployedNetwork
        if arch_dict is None:
            raise CheckpointError(f"{source}: the stored network description has no arch")
        spec = {**spec, "arch": arch_dict}
    try:
        return DeployedNetwork.from_dict(spec)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from None


def match_keys(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """`state` with the common prefix a wrapping module adds (`model.` of a Lightning module, `net.`) removed, so
    its keys are a model's `expected` ones; unchanged when they already are or no prefix makes them so."""
    if expected <= set(state):
        return {k: state[k] for k in expected}
    for key in state:
        for name in expected:
            if key.endswith("." + name):
                prefix = key[: -len(name)]
                stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                if expected <= set(stripped):
                    return {k: stripped[k] for k in expected}
                break
    return state


def load_model(
    path: str | os.PathLike[str], network: DeployedNetwork | None = None
) -> tuple[nn.Module, DeployedNetwork, dict[str, float]]:
    """`(model in eval mode, its DeployedNetwork, metrics)` from a model checkpoint. The network is the one the
    file records, else `network` (needed for a bare state_dict); CheckpointError when the weights do not fit."""
    return _load(read_model(path), path, network)


def _load(
    file: ModelFile, path: str | os.PathLike[str], network: DeployedNetwork | None
) -> tuple[nn.Module, DeployedNetwork, dict[str, float]]:
    net = file.network or network
    if net is None:
        raise CheckpointError(
            f"{path} records no network (a bare state_dict); give the network it belongs to, or the model.pt written "
            "by the finetune stage or the standalone trainer"
        )
    model = net.build_model()
    load_weights(model, match_keys(file.state_dict, set(model.state_dict())), source=str(path))
    return model.eval(), net, file.metrics


def load_static_model(path: str | os.PathLike[str]) -> tuple[nn.Module, Any, dict[str, float]]:
    """Rebuild `(model, Arch, metrics)` from a tinyflow `model.pt` (a `StaticNet`, or the network it records);
    CheckpointError when it is corrupt or foreign."""
    file = read_model(path)
    if not file.tinyflow_format or file.network is None:
        raise CheckpointError(
            f"{path} is not a tinyflow model checkpoint (expected format {MODEL_FORMAT}); it should be the "
            "model.pt written by the finetune stage or the standalone trainer"
        )
    model, net, metrics = _load(file, path, None)
    return model, net.to_arch(), metrics
