"""Load the final (fine-tuned) static model that the `quantize` and `deploy` stages export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tinyflow.arch.genome import Arch
from tinyflow.context import RunContext
from tinyflow.errors import CheckpointError, TinyflowError
from tinyflow.training.checkpoint import build_network, read_network_spec


class MissingStageError(TinyflowError):
    """A stage needs what an earlier stage produces, and that stage has not run."""


def require(ctx: RunContext, field: str, producer: str, consumer: str) -> Any:
    """`ctx.<field>`, or a clear error naming the stage that produces it."""
    value = getattr(ctx, field)
    if not value:
        done = ", ".join(ctx.completed) or "none"
        raise MissingStageError(
            f"stage '{consumer}' needs {field} from stage '{producer}', which has not run (stages finished so far: "
            f"{done}). Add '{producer}' before '{consumer}' in `stages:` (e.g. "
            f"`stages=[space,train,search,finetune,quantize,deploy]`), or resume a run that has finished it."
        )
    return value


def load_state_dict(
    path: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any] | None]:
    """(state_dict, arch dict or None, network spec or None) from a `model.pt` (`save_static_model`'s
    `{"state_dict", "arch_json"[, "network_json"]}`), `{"state_dict", "arch"}`, a Lightning checkpoint (keys under a
    module prefix are matched later) or a plain state_dict. The network spec says when the model is not a
    `StaticNet` (an `RNNPoolNet`: `tinyflow.training.checkpoint.network_spec`)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model checkpoint {path} does not exist; re-run the 'finetune' stage to write it.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"model checkpoint {path} cannot be read ({exc}); re-run the 'finetune' stage.") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        arch = obj.get("arch", obj.get("arch_json"))  # tinyflow.training.checkpoint.save_static_model: arch_json
        if isinstance(arch, str):
            arch = Arch.from_json(arch).to_dict()
        return dict(obj["state_dict"]), arch, read_network_spec(obj, path)
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), None, None
    raise CheckpointError(f"model checkpoint {path} holds a {type(obj).__name__}, not a state_dict.")


def _match_keys(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Strip the common prefix a wrapping module adds (`model.`, `net.`) so the keys match StaticNet's."""
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


def load_final_model(ctx: RunContext, consumer: str) -> tuple[Arch, nn.Module]:
    """The final arch and its fine-tuned model (eval mode): a `StaticNet`, or the `RNNPoolNet` the checkpoint
    records; or an error naming the missing stage."""
    ckpt = require(ctx, "model_checkpoint", "finetune", consumer)
    state, arch_dict, spec = load_state_dict(ckpt)
    arch_dict = arch_dict or require(ctx, "arch", "search", consumer)
    arch = Arch.from_dict(arch_dict)
    model = build_network(arch, spec)
    state = _match_keys(state, set(model.state_dict()))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(
            f"model checkpoint {ckpt} does not match the final arch ({first}); re-run 'finetune' for this arch."
        ) from None
    return arch, model.eval()
