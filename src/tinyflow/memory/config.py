"""`MemoryConfig`: the memory conventions every memory figure records (`conf/config.yaml: memory`), validated here.

A leaf module (of tinyflow it imports only `tinyflow.errors`): the allowed values of each field live here, and
`tinyflow.memory.arena` takes its algorithm names from `ARENA_ALGORITHMS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from tinyflow.errors import ConfigError

#: how a step's working set is counted (see tinyflow.memory.lifetimes)
RULES = ("liveness", "layer_local")
#: bytes per activation element: int8, int16/float16, float32
DTYPE_BYTES = (1, 2, 4)
#: arena placement algorithms (see tinyflow.memory.arena), `best` tries them all
ARENA_ALGORITHMS = (
    "first_fit_decreasing",
    "greedy_by_breadth",
    "longest_lived_first",
    "largest_area_first",
    "best",
)


@dataclass(frozen=True)
class MemoryConfig:
    """Memory conventions. Construction validates every field (`ConfigError` naming the field)."""

    dtype_bytes: int = 1
    inplace_depthwise: bool = True
    count_input: bool = True
    rule: str = "liveness"  # or "layer_local"
    arena_algorithm: str = "best"  # one of ARENA_ALGORITHMS

    def __post_init__(self) -> None:
        check_memory_config(self)

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> MemoryConfig:  # a DictConfig is a Mapping
        """The validated `MemoryConfig` of a `memory` config node (DictConfig, mapping, or None for the defaults)."""
        if not node:
            return cls()
        d = _plain(node)
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ConfigError(f"memory.{unknown[0]} is not a memory convention; the fields are {', '.join(known)}.")
        return cls(**d)


def check_arena_algorithm(name: str) -> None:
    """Raise ConfigError unless `name` is one of ARENA_ALGORITHMS."""
    if name not in ARENA_ALGORITHMS:
        raise ConfigError(
            f"memory.arena_algorithm: '{name}' is not one of {sorted(ARENA_ALGORITHMS)}. "
            f"Choose one, e.g. `memory.arena_algorithm=best`."
        )


def check_memory_config(memory: MemoryConfig) -> None:
    """Raise ConfigError naming the field if `memory` holds a value outside RULES, DTYPE_BYTES, ARENA_ALGORITHMS."""
    if memory.rule not in RULES:
        raise ConfigError(
            f"memory.rule: '{memory.rule}' is not one of {list(RULES)}. Choose one, e.g. `memory.rule=liveness`."
        )
    if isinstance(memory.dtype_bytes, bool) or memory.dtype_bytes not in DTYPE_BYTES:
        raise ConfigError(
            f"memory.dtype_bytes: {memory.dtype_bytes!r} is not one of 1 (int8), 2 (16-bit) or 4 (float32). "
            f"Fix it, e.g. `memory.dtype_bytes=1`."
        )
    for flag in ("inplace_depthwise", "count_input"):
        if not isinstance(getattr(memory, flag), bool):
            raise ConfigError(f"memory.{flag}: {getattr(memory, flag)!r} must be true or false.")
    check_arena_algorithm(memory.arena_algorithm)


def _plain(node: Any) -> dict[str, Any]:
    """A config node as a plain dict (interpolations resolved, `???` left as is); omegaconf imported on use."""
    from omegaconf import DictConfig, OmegaConf

    d = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    assert isinstance(d, dict)
    return d
