"""`python -m tinyflow.firmware`: an int8 model and its plan as a C project, built, run and checked (config
`conf/firmware.yaml`). Exit code 2 when a check failed or could not run (the firmware not built for the device's
core, the reference runtime comparison not run, outputs not bit-exact): the result file still says which."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import tinyflow
from tinyflow.app import clean_errors, refuse_code_arguments


@hydra.main(version_base="1.3", config_path=str(tinyflow.CONF_DIR), config_name="firmware")
@clean_errors
def main(cfg: DictConfig) -> dict:
    from tinyflow.app import _is_multirun
    from tinyflow.firmware.app import run_firmware

    out = run_firmware(cfg)
    if out.get("failed_checks") and not _is_multirun():
        sys.exit(2)
    return out


if __name__ == "__main__":
    refuse_code_arguments()  # before Hydra instantiates anything
    main()
