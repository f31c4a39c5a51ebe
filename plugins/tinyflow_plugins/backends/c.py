"""Backend `c`: the deployed int8 network as TinyEngine-style C firmware, built for Cortex-M and run on qemu.

From the `Deployment` the `schedule` stage planned (its int8 IR with quantization and constants, and its plan) it
generates the C project for the device's own core (`target: auto` -> `device.core`; a core with no toolchain
here, e.g. Xtensa, gets the project and a paragraph saying it was not built), links it for the device (the linker's
check of SRAM and flash: the report's top-level "fits"), runs the test images on the emulator and checks the
outputs bit for bit against the NumPy oracle and by top-1 against onnxruntime
(`tinyflow.firmware`, docs/design.md §15). Without the cross-compiler or qemu it writes the project and says that
building and running were skipped. It returns its `firmware` report section and details; the zipped project and
the map file go to the tracker. With `profile: true` the firmware counts instructions per layer
(`firmware/profile.py`): a `firmware profile` report section, per-op-kind metrics `firmware.profile.<kind>.*`, the
figure `profile.png` as an artifact, and a profile whose counting check fails is a failed check
(`firmware/profile_rows.py`).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from tinyflow.contracts import BackendResult
from tinyflow.deploy.quantize import collect_images
from tinyflow.device import Device
from tinyflow.firmware.profile_rows import profile_metrics, profile_report_section
from tinyflow.firmware.project import FirmwareSettings, make_firmware
from tinyflow.firmware.report_rows import SECTION_TITLE, firmware_section

log = logging.getLogger(__name__)

#: what the backend reports as checks (`linker_fits`: the link for the device, the report's top-level "fits")
CHECKS = (
    "built",
    "fits",
    "bit_exact",
    "images",
    "overflow",
    "skipped",
    "not_built",
    "reference_check",
    "failed_checks",
)


class CBackend:
    """Generates, builds, runs and checks the firmware of the deployed network."""

    name = "c"
    option_ranges: ClassVar[dict[str, dict[str, float]]] = {
        "images": {"min": 1},
        "timeout_s": {"above": 0},
    }

    def __init__(
        self,
        device: Any,
        target: str = "auto",
        opt: str = "-O2",
        images: int = 100,
        stack_reserve: int | str = "auto",
        on_overflow: str = "report",
        rounding: str = "single",
        timeout_s: float = 900.0,
        profile: bool = False,
    ):
        self.device = Device.from_config(device)
        self.settings = FirmwareSettings(
            target=target,
            opt=opt,
            images=int(images),
            stack_reserve=stack_reserve if stack_reserve == "auto" else int(stack_reserve),
            on_overflow=on_overflow,
            rounding=rounding,
            timeout_s=float(timeout_s),
            profile=bool(profile),
        )

    def deploy(
        self, deployment: Any, model: Any, data: Any, workdir: str, tracker: Any, files: dict[str, str]
    ) -> BackendResult:
        images, _ = collect_images(data.test_dataloader(), self.settings.images)
        result = make_firmware(deployment, self.device, workdir, images, self.settings)
        metrics = {f"firmware_{k}": float(v) for k, v in result.items() if isinstance(v, int | float)}
        if self.settings.profile:
            metrics.update(profile_metrics(result))
        if result.get("built"):  # measured on the built firmware, under the shared names (docs/design.md §12)
            shared = {"sram.peak_bytes": "sram_bytes", "sram.arena_bytes": "arena_bytes", "flash.bytes": "flash_bytes"}
            metrics.update({name: float(result[key]) for name, key in shared.items() if key in result})
        tracker.log_metrics(metrics)
        tracker.log_parent_metrics(metrics)
        out_files = {"firmware_zip": result["project_zip"]}
        if result.get("map_file"):
            out_files["firmware_map"] = result["map_file"]
        if result.get("profile_figure"):
            out_files["firmware_profile_figure"] = result["profile_figure"]
        for path in out_files.values():
            tracker.log_artifact(path, "firmware")
        device = self.device
        checks = {k: result[k] for k in CHECKS if k in result}
        checks["linker_fits"] = result.get("fits") if result.get("built") else None
        if "profile_check" in result:
            checks["profile_check"] = result["profile_check"]
        sections = [firmware_section(result, device.sram_budget_bytes, device.flash_budget_bytes)]
        if self.settings.profile:
            sections.append(profile_report_section(result))
        return BackendResult(
            metrics=metrics,
            checks=checks,
            files=out_files,
            sections=sections,
            details={SECTION_TITLE: result},
        )
