"""Checks shared by every config validator: a number must be finite (docs/design.md §13).

NaN passes every range check written as a comparison (`nan <= 0` and `nan > 1` are both false) and infinity
passes every lower bound, so a range check alone lets `device.sram_kb=nan` or `finetune.lr=inf` through to fail
deep in a stage (a "bug in tinyflow" paragraph, or quantize's "scale issue"). A leaf module: it imports only
`tinyflow.errors`.
"""

from __future__ import annotations

import math
from typing import Any

from tinyflow.errors import ConfigError


def is_finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that is neither NaN nor ±infinity and fits a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def non_finite_problem(where: str, value: Any) -> str | None:
    """`<where> = nan must be a finite number` for a NaN, an infinity or an int too large for a float; None for
    any other value (other types are the type check's business)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or is_finite_number(value):
        return None
    return f"{where} = {value!r} must be a finite number (not NaN or infinity)"


def check_finite(where: str, value: Any) -> None:
    """Raise `ConfigError` naming `where` when `value` is a number that is not finite."""
    problem = non_finite_problem(where, value)
    if problem is not None:
        raise ConfigError(f"{problem}. Give an ordinary number, e.g. `{where}=1`.")


def non_finite_leaves(node: Any, prefix: str = "") -> list[str]:
    """A problem line for every non-finite number anywhere in a plain (resolved) config container."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in non_finite_leaves(v, f"{prefix}{k}.")]
    if isinstance(node, list | tuple):
        return [p for i, v in enumerate(node) for p in non_finite_leaves(v, f"{prefix[:-1]}[{i}].")]
    problem = non_finite_problem(prefix[:-1], node)
    return [] if problem is None else [problem]


def refuse_non_finite(cfg: Any) -> None:
    """`ConfigError` listing every number of a whole config (a DictConfig or a mapping) that is NaN or infinite.
    A config whose interpolations cannot be resolved is left to the validators that report those."""
    from omegaconf import DictConfig, OmegaConf

    try:
        node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    except Exception:  # an interpolation error: the code that reads that value words it
        return
    problems = non_finite_leaves(node)
    if problems:
        raise ConfigError(
            "the config has numbers that are not finite: " + "; ".join(problems) + ". Give ordinary numbers on the "
            "command line or in the config file (nothing has run yet)."
        )
