"""Backend `c`: the deployed int8 network as TinyEngine-style C firmware, built for Cortex-M and run on qemu.

From the `quantize` stage's int8 ONNX and the `schedule` stage's plan it generates the C project, links it for the
device (the linker's check of SRAM and flash), runs the test images on the emulator and checks the outputs bit
for bit against the NumPy oracle and by top-1 against onnxruntime (`tinyflow.firmware`, docs/design.md §15).
Without the cross-compiler or qemu it writes the project and says that building and running were skipped. The
figures go to the report's `firmware` section; the zipped project and the map file to the tracker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tinyflow.arch.genome import Arch
from tinyflow.deploy.model import MissingStageError
from tinyflow.deploy.quantize import collect_images
from tinyflow.device import Device
from tinyflow.firmware.project import FirmwareSettings, load_plan, make_firmware

log = logging.getLogger(__name__)


class CBackend:
    """Generates, builds, runs and checks the firmware of the deployed network."""

    name = "c"

    def __init__(
        self,
        device: Any,
        target: str = "cortex_m7",
        opt: str = "-O2",
        images: int = 100,
        stack_reserve: int = 2048,
        on_overflow: str = "report",
        rounding: str = "single",
        timeout_s: float = 900.0,
        **host_options: Any,  # the onnxruntime backend's keys (latency_runs, …) that debug=fast sets: unused here
    ):
        self.device = Device.from_config(device)
        self.settings = FirmwareSettings(
            target=target,
            opt=opt,
            images=int(images),
            stack_reserve=int(stack_reserve),
            on_overflow=on_overflow,
            rounding=rounding,
            timeout_s=float(timeout_s),
        )

    def deploy(
        self, model: Any, arch: Arch, data: Any, workdir: str, tracker: Any, files: dict[str, str]
    ) -> dict[str, Any]:
        for key, producer in (("onnx_int8", "quantize"), ("plan", "schedule")):
            if not files.get(key) or not Path(files[key]).exists():
                raise MissingStageError(
                    f"backend c: the {key} file ({files.get(key) or 'none'}) does not exist; stage '{producer}' "
                    f"writes it. Add '{producer}' before 'deploy' in `stages:`."
                )
        plan = load_plan(files["plan"])
        images, _ = collect_images(data.test_dataloader(), self.settings.images)
        result = make_firmware(files["onnx_int8"], plan, self.device, workdir, images, self.settings)
        metrics = {f"firmware_{k}": float(v) for k, v in result.items() if isinstance(v, int | float)}
        tracker.log_metrics(metrics)
        tracker.log_parent_metrics(metrics)
        out_files = {"firmware_zip": result["project_zip"]}
        if result.get("map_file"):
            out_files["firmware_map"] = result["map_file"]
        for path in out_files.values():
            tracker.log_artifact(path, "firmware")
        checks = {k: result[k] for k in ("built", "fits", "bit_exact", "images", "overflow", "skipped") if k in result}
        return {"metrics": metrics, "checks": checks, "files": out_files, "extra": {"firmware": result}}
