"""`Deployment`: what the `schedule` stage makes once and every backend receives (docs/design.md §1, §15).

It holds the deployed network's description, the int8 IR carrying its quantization and constants
(`tinyflow.ir.quant`), the `ExecutionPlan` the scheduler chose and the analysis of that plan. `plan_deployment`
is the one planning path: the `schedule` stage, `python -m tinyflow.analyze` and `python -m tinyflow.firmware`
call it with the same options and get the same plan. Saved as one file (`deployment.npz`: a JSON header and
the constants as arrays, read back without pickle), so a resumed run or a backend reads what was planned.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyflow.errors import TinyflowError
from tinyflow.ir.graph import Graph
from tinyflow.memory.plan import ExecutionPlan
from tinyflow.network import DeployedNetwork

DEPLOYMENT_FILE = "deployment.npz"
FORMAT_VERSION = 1
_HEADER = "__deployment__"
_CONST = "c/"


class DeploymentFileError(TinyflowError):
    """A deployment file that cannot be read (corrupt, another format version, not a deployment)."""


@dataclass
class Deployment:
    """The deployed network, planned: description, int8 IR (with quantization), plan, analysis.

    `model_path` is the int8 model file deployed (the IR imported from it, or the description's IR with the file's
    constants attached; None without a file); backends may hand it to a reference runtime (onnxruntime, TF Lite
    Micro) to compare against, never to read the network again. `source` says where the IR came from.
    `layer_plan` is the layer-by-layer plan the analysis compares with (None when it would be `plan` itself)."""

    graph: Graph
    plan: ExecutionPlan
    analysis: dict[str, Any]
    network: DeployedNetwork | None = None
    model_path: str | None = None
    source: str = "network description"
    extra: dict[str, Any] = field(default_factory=dict)
    layer_plan: ExecutionPlan | None = None

    # the figures everybody reads, typed
    @property
    def arena_bytes(self) -> int:
        return int(self.analysis["arena_bytes"])

    @property
    def peak_live_bytes(self) -> int:
        return int(self.analysis["peak_live_bytes"])

    @property
    def flash_bytes(self) -> int:
        return int(self.analysis["flash_bytes"])

    @property
    def macs(self) -> int:
        return int(self.analysis["macs"])

    @property
    def fits(self) -> bool:
        return bool(self.analysis["fits"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The network input's NCHW shape (batch 1)."""
        return tuple(self.graph[self.graph.inputs[0]].shape)

    @property
    def quantized(self) -> bool:
        """The IR carries its quantization (imported from an int8 file)."""
        return bool(self.graph.quant)

    # ---- one file ----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the deployment as one `.npz` (temp file, then rename)."""
        from tinyflow.atomic import atomic_write_bytes
        from tinyflow.ir.serialize import graph_to_dict

        header = {
            "format": FORMAT_VERSION,
            "graph": graph_to_dict(self.graph),
            "plan": self.plan.to_dict(),
            "analysis": self.analysis,
            "network": self.network.to_dict() if self.network is not None else None,
            "model_path": self.model_path,
            "source": self.source,
            "extra": self.extra,
            "layer_plan": self.layer_plan.to_dict() if self.layer_plan is not None else None,
        }
        arrays = {_HEADER: np.frombuffer(json.dumps(header, default=_json_default).encode(), np.uint8)}
        for name, value in self.graph.constants.items():
            arrays[_CONST + name] = np.asarray(value)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        out = Path(path)
        atomic_write_bytes(out, buf.getvalue())
        return out

    @classmethod
    def load(cls, path: str | Path) -> Deployment:
        """Read a deployment file (no pickle: a file cannot run code)."""
        from tinyflow.ir.serialize import graph_from_dict

        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                header = json.loads(bytes(z[_HEADER]).decode())
                constants = {k[len(_CONST) :]: z[k] for k in z.files if k.startswith(_CONST)}
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise DeploymentFileError(
                f"deployment file '{p}' cannot be read ({type(exc).__name__}: {str(exc)[:120]}); rerun the "
                "'schedule' stage to write it again."
            ) from None
        if header.get("format") != FORMAT_VERSION:
            raise DeploymentFileError(
                f"deployment file '{p}' has format {header.get('format')}, this tinyflow reads {FORMAT_VERSION}; "
                "rerun the 'schedule' stage."
            )
        return cls(
            graph=graph_from_dict(header["graph"], constants),
            plan=ExecutionPlan.from_dict(header["plan"]),
            analysis=header["analysis"],
            network=DeployedNetwork.from_dict(header["network"]) if header.get("network") else None,
            model_path=header.get("model_path"),
            source=header.get("source", ""),
            extra=header.get("extra", {}),
            layer_plan=ExecutionPlan.from_dict(header["layer_plan"]) if header.get("layer_plan") else None,
        )


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def plan_deployment(
    graph: Graph,
    scheduler: Any,
    memory: Any,
    device: Any,
    cost_model: Any = None,
    *,
    network: DeployedNetwork | None = None,
    baseline: Graph | None = None,
    strict: bool = False,
    model_path: str | None = None,
    source: str | None = None,
    compare_layer: bool = True,
) -> Deployment:
    """Plan and cost `graph` for `device` with `scheduler` (chosen for the device's budget,
    `Scheduler.for_budget`) — the one function every entry point plans a deployed network with.

    `model_path`: the int8 file deployed; the flash figure is its count under the memory convention
    (`tinyflow.analyze.conventions.model_flash`, computed here once). `strict`: an option invalid for this network
    is an error (one network analysed) instead of clamped (a pipeline's network)."""
    from tinyflow.analyze.core import analyze

    path = str(model_path) if model_path else None
    analysis, plan, layer = analyze(
        graph,
        scheduler,
        memory,
        device,
        cost_model,
        compare_layer=compare_layer,
        baseline=baseline,
        strict=strict,
        model_path=path,
    )
    src = source or ("int8 model file" if path else "network description")
    analysis["source"] = src
    if network is not None:
        analysis["deployed_network"] = network.to_dict()
    return Deployment(graph, plan, analysis, network, path, src, layer_plan=layer)
