"""tinyflow: find, train, schedule and deploy neural networks that fit a microcontroller."""

from pathlib import Path

from tinyflow.config_schema import register_schemas

__version__ = "0.1.0"

#: the repository's top-level `conf/` directory (tinyflow is installed editable from its checkout)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
#: where runs, multiruns and the MLflow store go by default
OUTPUTS_DIR = Path(__file__).resolve().parents[2] / "outputs"

register_schemas()


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("tf_outputs"):
        OmegaConf.register_new_resolver("tf_outputs", lambda: OUTPUTS_DIR.as_posix())
    if not OmegaConf.has_resolver("tf_run_id"):  # unique run folders (tinyflow.run_dirs)
        from tinyflow.run_dirs import run_id

        OmegaConf.register_new_resolver("tf_run_id", run_id, use_cache=True)
    if not OmegaConf.has_resolver("tf_stem_options"):
        OmegaConf.register_new_resolver("tf_stem_options", _stem_options)


def _stem_options(stem: str, scheduler: object) -> object:
    """`trainer.stem_options` of conf/trainer/ofa.yaml: the scheduler's config when the supernet's stem comes from it
    (stem != conv), else None — so a conv-stem training does not depend on (nor is cached by) the scheduler."""
    from omegaconf import DictConfig, OmegaConf

    if stem == "conv" or scheduler is None:
        return None
    return OmegaConf.to_container(scheduler, resolve=True) if isinstance(scheduler, DictConfig) else scheduler


_register_resolvers()
