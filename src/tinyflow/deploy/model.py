"""The final (fine-tuned) model that `quantize` and `deploy` export, the run's deployed network, and the Deployment
the `schedule` stage planned."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from tinyflow.arch.genome import Arch
from tinyflow.context import RunContext
from tinyflow.errors import TinyflowError
from tinyflow.network import DeployedNetwork

if TYPE_CHECKING:
    from tinyflow.deployment import Deployment
from tinyflow.training.checkpoint import load_model, read_model


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
            f"`stages=[space,train,search,finetune,quantize,schedule,deploy]`), or resume a run that has finished it."
        )
    return value


def context_network(ctx: RunContext, consumer: str) -> DeployedNetwork:
    """The run's deployed network: `ctx.network`, else the one the model checkpoint records, else the plain
    network of the searched arch; MissingStageError when there is none of them."""
    if ctx.network:
        return DeployedNetwork.from_dict(ctx.network)
    if ctx.model_checkpoint and Path(ctx.model_checkpoint).is_file():
        recorded = read_model(ctx.model_checkpoint).network
        if recorded is not None:
            return recorded
    if ctx.arch:
        return DeployedNetwork.plain(Arch.from_dict(ctx.arch))
    require(ctx, "arch", "search", consumer)  # raises, naming the stage
    raise AssertionError("unreachable")


def load_final_model(ctx: RunContext, consumer: str) -> tuple[Arch, nn.Module]:
    """The final arch and its fine-tuned model (eval mode), rebuilt as the network the checkpoint records (or the
    run context's, for a bare state_dict); an error naming the missing stage."""
    ckpt = require(ctx, "model_checkpoint", "finetune", consumer)
    fallback = None
    if ctx.network or ctx.arch:
        fallback = context_network(ctx, consumer)
    model, net, _ = load_model(ckpt, fallback)
    return net.to_arch(), model


def load_deployment(ctx: RunContext, consumer: str) -> Deployment:
    """The Deployment the `schedule` stage of this run planned and saved (`ctx.artifacts["deployment"]`); a
    MissingStageError naming `schedule` when it has not run (or its file is gone)."""
    from tinyflow.deployment import Deployment

    path = ctx.artifacts.get("deployment")
    if not path or not Path(path).is_file():
        done = ", ".join(ctx.completed) or "none"
        raise MissingStageError(
            f"stage '{consumer}' needs the Deployment from stage 'schedule' ({path or 'none'} does not exist; stages "
            f"finished so far: {done}). Add 'schedule' before '{consumer}' in `stages:` (e.g. "
            "`stages=[space,train,search,finetune,quantize,schedule,deploy]`), or resume a run that has finished it."
        )
    return Deployment.load(path)
