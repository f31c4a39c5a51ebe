"""Shared by the deployment tests: a tiny MBConv net trained for a few steps on the bundled digits, saved as
`model.pt` the way `finetune` does, and a real Hydra-composed config for the stages."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tinyflow.arch.genome import Arch
from tinyflow.arch.space import MBConvSpace
from tinyflow.context import RunContext
from tinyflow.nn.static import StaticNet
from tinyflow.training.checkpoint import save_static_model

REPO = Path(__file__).resolve().parents[1]
RESOLUTION = 16
_TRAINED: dict[int, dict[str, torch.Tensor]] = {}


def tiny_arch(seed: int = 0) -> Arch:
    space = MBConvSpace(
        width_mult=0.5,
        resolution=RESOLUTION,
        in_channels=1,
        num_classes=10,
        stages=({"width": 24, "stride": 2}, {"width": 32, "stride": 2}),
        tail_channels=(),
        head_channels=0,
    )
    return space.sample(random.Random(seed))


def compose_cfg(*overrides: str) -> DictConfig:
    """The composed job config (real Hydra composition of conf/)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return compose("config", overrides=["data=digits", "backend=onnxruntime", "tracking=none", *overrides])


def fit_adam(model: torch.nn.Module, data: Any, epochs: int) -> torch.nn.Module:
    """`epochs` of Adam (lr 5e-3, cross-entropy) over `data`'s train loader; returns the model in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(epochs):
        for x, y in data.train_dataloader():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def train_tiny(arch: Arch, data: Any, epochs: int = 4, seed: int = 0) -> StaticNet:
    """A few epochs of Adam on the digits: enough for ~90 % accuracy, a fraction of a second per epoch."""
    torch.manual_seed(seed)
    return fit_adam(StaticNet(arch), data, epochs)


def finetuned_run(out: Path, *overrides: str, epochs: int = 4) -> tuple[DictConfig, RunContext, StaticNet]:
    """A run dir holding `model.pt` as `finetune` leaves it, its config and context."""
    from tinyflow.plugins import build_plugin

    torch.set_num_threads(1)
    cfg = compose_cfg(*overrides)
    arch = tiny_arch()
    data = build_plugin(cfg, "data")
    data.set_resolution(arch.resolution)
    data.setup("fit")
    if epochs not in _TRAINED:  # one training per test session: every deployment test starts from the same net
        _TRAINED[epochs] = train_tiny(arch, data, epochs=epochs).state_dict()
    model = StaticNet(arch)
    model.load_state_dict(_TRAINED[epochs])
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "model.pt"
    save_static_model(ckpt, model, arch)
    ctx = RunContext(output_dir=str(out), arch=arch.to_dict(), model_checkpoint=str(ckpt))
    ctx.completed += ["space", "train", "search", "finetune"]
    return cfg, ctx, model


def logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


_STORE: list[str] = []


def shared_store(tmp_path_factory: Any) -> str:
    """One real MLflow sqlite store for all deployment tests (creating its schema takes several seconds)."""
    if not _STORE:
        _STORE.append(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")
    return _STORE[0]
