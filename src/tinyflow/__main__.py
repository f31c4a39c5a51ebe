"""`python -m tinyflow`: the pipeline as a Hydra app (config in the repository's `conf/`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import tinyflow
from tinyflow.app import clean_errors, refuse_code_arguments


@hydra.main(version_base="1.3", config_path=str(tinyflow.CONF_DIR), config_name="config")
@clean_errors(finite_config=False)  # run_pipeline checks inside its job, so the MLflow run is FAILED with the list
def main(cfg: DictConfig) -> dict:
    from tinyflow.pipeline import run_pipeline

    ctx = run_pipeline(cfg)
    return {"status": "FINISHED", "output_dir": ctx.output_dir, "metrics": ctx.metrics}


if __name__ == "__main__":
    refuse_code_arguments()  # before Hydra instantiates anything
    main()
