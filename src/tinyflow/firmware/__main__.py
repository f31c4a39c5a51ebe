"""`python -m tinyflow.firmware`: an int8 model and its plan as a C project, built, run and checked (config
`conf/firmware.yaml`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import tinyflow
from tinyflow.app import clean_errors, refuse_code_arguments


@hydra.main(version_base="1.3", config_path=str(tinyflow.CONF_DIR), config_name="firmware")
@clean_errors
def main(cfg: DictConfig) -> dict:
    from tinyflow.firmware.app import run_firmware

    return run_firmware(cfg)


if __name__ == "__main__":
    refuse_code_arguments()  # before Hydra instantiates anything
    main()
