"""`python -m tinyflow.analyze`: plan and cost one network (config `conf/analyze.yaml`), no training."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import tinyflow
from tinyflow.app import clean_errors, refuse_code_arguments


@hydra.main(version_base="1.3", config_path=str(tinyflow.CONF_DIR), config_name="analyze")
@clean_errors
def main(cfg: DictConfig) -> dict:
    from tinyflow.analyze.app import run_analyze

    return run_analyze(cfg)


if __name__ == "__main__":
    refuse_code_arguments()  # before Hydra instantiates anything
    main()
