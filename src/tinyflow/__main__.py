"""`python -m tinyflow`: the pipeline as a Hydra app (config in the repository's `conf/`). Exit code 2 when the
backend reports failed checks (e.g. firmware not built for the device's core): the report still says which."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import tinyflow
from tinyflow.app import clean_errors, refuse_code_arguments


@hydra.main(version_base="1.3", config_path=str(tinyflow.CONF_DIR), config_name="config")
@clean_errors(finite_config=False)  # run_pipeline checks inside its job, so the MLflow run is FAILED with the list
def main(cfg: DictConfig) -> dict:
    from tinyflow.app import _is_multirun
    from tinyflow.pipeline import run_pipeline

    ctx = run_pipeline(cfg)
    failed = (ctx.extra.get("deploy_checks") or {}).get("failed_checks") or []
    if failed and not _is_multirun():  # a sweep records them in its summary and goes on
        print(
            f"tinyflow: the {ctx.extra.get('backend', 'backend')} backend's checks failed: {'; '.join(failed)}. "
            f"The report in {ctx.output_dir} says which and why.",
            file=sys.stderr,
        )
        sys.exit(2)
    return {"status": "FINISHED", "output_dir": ctx.output_dir, "metrics": ctx.metrics}


if __name__ == "__main__":
    refuse_code_arguments()  # before Hydra instantiates anything
    main()
