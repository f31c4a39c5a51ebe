"""How the `ofa` trainer runs, apart from what it computes: Lightning DDP on CPU (spawned workers, or processes
torchrun started), replaying a spawned run's history to the tracker, channels-last weights, the history figure."""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
import torch


def launched_externally() -> bool:
    """Whether torchrun (or another launcher) started this process as one rank of a DDP job."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ)


def ddp_strategy(strategy: Any, accelerator: str) -> Any:
    """`ddp` on CPU means: find unused parameters (each subnet uses part of the supernet), gloo, and — unless
    torchrun already started the processes — spawn the workers from this process. Other strategies pass through."""
    name = strategy if isinstance(strategy, str) else None
    if name is None or not name.startswith("ddp"):
        return strategy
    start = "popen" if launched_externally() else ("fork" if name == "ddp_fork" else "spawn")
    return pl.strategies.DDPStrategy(
        find_unused_parameters=True,
        process_group_backend="gloo" if accelerator == "cpu" else None,
        start_method=start,
    )


def share_checkpoint(path: Any) -> None:
    """After a DDP fit that torchrun started on several nodes, give every rank rank 0's checkpoint: Lightning writes
    it on rank 0 only, and another node's disk lacks it (docs/design.md §16). A no-op outside such a job."""
    import torch.distributed as dist

    if not (launched_externally() and dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    from pathlib import Path

    from tinyflow.atomic import atomic_path

    target = Path(path)
    payload = [target.read_bytes() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(payload, src=0)
    if dist.get_rank() != 0 and (not target.exists() or target.read_bytes() != payload[0]):
        with atomic_path(target) as tmp:
            tmp.write_bytes(payload[0])


def spawns(strategy: Any) -> bool:
    """Whether a (built) strategy trains in worker processes this process starts (their tracker calls are lost)."""
    return (
        isinstance(strategy, pl.strategies.DDPStrategy)
        and not launched_externally()
        and strategy._start_method in ("spawn", "fork", "forkserver")
    )


def log_record(tracker: Any, record: dict[str, Any]) -> None:
    """One epoch's figures to the tracker, step = global epoch; also under the phase's name."""
    step = int(record["epoch"])
    values = {k: float(v) for k, v in record.items() if isinstance(v, int | float) and k != "epoch"}
    phased = {f"{record['phase']}.{k}": v for k, v in values.items() if k.startswith("val_acc")}
    tracker.log_metrics({**values, **phased}, step=step)


def replay(tracker: Any, history: list[dict[str, Any]], start_epoch: int) -> None:
    """Log the epochs a spawned DDP run trained (rank 0 of a spawned run cannot reach this process's tracker)."""
    for record in history:
        if record["epoch"] >= start_epoch:
            log_record(tracker, record)


def channels_last(net: torch.nn.Module) -> None:
    """NHWC weights; weights with a size-1 channel dim (depthwise k×k, 1×1 convs) are the same bytes either way,
    and keeping them contiguous keeps DDP's gradient buckets in the layout autograd produces."""
    net.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 4 and (p.shape[1] == 1 or p.shape[2:] == (1, 1)):
                p.data = p.data.contiguous()


def history_figure(history: list[dict[str, Any]]) -> Any:
    """Val accuracy of the largest, smallest and fixed random subnet per scored epoch, phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = [h["epoch"] for h in history]
    scored = [h for h in history if "val_acc_largest" in h]  # `val_every: phase` scores the phases' last epochs
    for label in ("largest", "smallest", "random"):
        ax.plot([h["epoch"] for h in scored], [100 * h[f"val_acc_{label}"] for h in scored], marker="o", label=label)
    start = 0
    for i, h in enumerate([*history, {"phase": None}]):
        if i == len(history) or (i > 0 and h["phase"] != history[i - 1]["phase"]):
            ax.axvspan(epochs[start] - 0.5, epochs[i - 1] + 0.5, alpha=0.08 * (1 + start % 2), color="grey")
            ax.text(epochs[start] - 0.4, ax.get_ylim()[0], history[start]["phase"], fontsize=8, va="bottom")
            start = i
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy (%), BN recalibrated")
    ax.set_title("once-for-all supernet: progressive shrinking")
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig
