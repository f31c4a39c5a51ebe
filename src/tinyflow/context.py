"""The typed run context passed from stage to stage and saved after each one (so a run can resume)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tinyflow.atomic import atomic_copy, atomic_write_text

__all__ = ["CONTEXT_FILE", "RunContext", "atomic_copy", "atomic_write_text"]  # the writers are re-exported

CONTEXT_FILE = "context.json"


@dataclass
class RunContext:
    """What the stages have produced so far. Paths are absolute; figures say their units in their names."""

    output_dir: str
    completed: list[str] = field(default_factory=list)
    # space: chosen width multiplier and resolution, with the per-cell statistics behind the choice
    width_mult: float | None = None
    resolution: int | None = None
    resolutions: list[int] | None = None  # with space.resolution_range: the range the search picks within
    space_stats: dict[str, Any] = field(default_factory=dict)
    # train: the supernet checkpoint
    supernet_checkpoint: str | None = None
    # search: the best arch (Arch.to_dict()) and the scheduler options searched with it
    arch: dict[str, Any] | None = None
    schedule_options: dict[str, Any] = field(default_factory=dict)
    # the deployed network (tinyflow.network.DeployedNetwork.to_dict()): kind, arch, kind-specific options
    network: dict[str, Any] | None = None
    # finetune / quantize
    model_checkpoint: str | None = None
    onnx_path: str | None = None
    onnx_int8_path: str | None = None
    # schedule: the analysis of the Deployment it planned (a JSON mirror the report and the search summary read);
    # the Deployment itself (IR, quantization, constants, plan) is the file `artifacts["deployment"]`, which
    # `deploy` loads (`tinyflow.deployment.Deployment.load`)
    plan: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    # deploy: `backend`, `deploy_checks`, `report_sections`, `backend_metrics`, `backend_details` and each detail
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | os.PathLike[str] | None = None) -> Path:
        """Write `context.json` atomically (temp file, then rename)."""
        target = Path(directory or self.output_dir) / CONTEXT_FILE
        atomic_write_text(target, json.dumps(asdict(self), indent=2, sort_keys=True, default=str))
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> RunContext:
        path = Path(directory) / CONTEXT_FILE
        data = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
