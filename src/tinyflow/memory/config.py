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
#: the runtime's persistent arena tail that is estimated beside the activations (`none`: not counted)
PERSISTENT = ("none", "tflm")
#: what flash_bytes counts: the weights and per-channel constants (TinyEngine), or the model file (TF Lite Micro
#: keeps the whole flatbuffer in flash)
FLASH = ("weights", "file")
#: arena placement algorithms (see tinyflow.memory.arena), `best` tries them all
ARENA_ALGORITHMS = (
    "first_fit_decreasing",
    "tflm_greedy",
    "greedy_by_breadth",
    "longest_lived_first",
    "largest_area_first",
    "best",
)


@dataclass(frozen=True)
class MemoryConfig:
    """Memory conventions. Construction validates every field (`ConfigError` naming the field).

    The defaults are the `tinyengine` preset (conf/memory/tinyengine.yaml); conf/memory/tflm.yaml is TF Lite
    Micro's (no in-place ops, its greedy planner, 16-byte aligned buffers, the persistent tail, the file in flash).
    """

    dtype_bytes: int = 1
    inplace_depthwise: bool = True
    count_input: bool = True
    rule: str = "liveness"  # or "layer_local"
    arena_algorithm: str = "best"  # one of ARENA_ALGORITHMS
    inplace_elementwise: bool = True  # an activation / batch norm writes over its input when the input dies there
    alignment: int = 1  # every arena buffer's size is rounded up to a multiple of this many bytes
    persistent: str = "none"  # one of PERSISTENT
    flash: str = "weights"  # one of FLASH
    fold_pads: bool = True  # a pad read only by convs is their padding (false: a tensor of its own, as TFLM runs it)
    convention: str = "tinyengine"  # the preset these values started from (a label for reports)

    def __post_init__(self) -> None:
        check_memory_config(self)

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> MemoryConfig:  # a DictConfig is a Mapping
        """The validated `MemoryConfig` of a `memory` config node (DictConfig, mapping, or None for the defaults)."""
        if not node:
            return cls()
        d = {k: v for k, v in _plain(node).items() if k != "_target_"}
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
    if isinstance(memory.alignment, bool) or not isinstance(memory.alignment, int) or memory.alignment < 1:
        raise ConfigError(f"memory.alignment: {memory.alignment!r} must be a positive integer (bytes), e.g. 16.")
    if memory.alignment & (memory.alignment - 1):
        raise ConfigError(f"memory.alignment: {memory.alignment} is not a power of two; use e.g. 1, 4 or 16.")
    if memory.persistent not in PERSISTENT:
        raise ConfigError(f"memory.persistent: '{memory.persistent}' is not one of {list(PERSISTENT)}.")
    if memory.flash not in FLASH:
        raise ConfigError(f"memory.flash: '{memory.flash}' is not one of {list(FLASH)}.")
    for flag in ("inplace_depthwise", "count_input", "inplace_elementwise", "fold_pads"):
        if not isinstance(getattr(memory, flag), bool):
            raise ConfigError(f"memory.{flag}: {getattr(memory, flag)!r} must be true or false.")
    check_arena_algorithm(memory.arena_algorithm)


def _plain(node: Any) -> dict[str, Any]:
    """A config node as a plain dict (interpolations resolved, `???` left as is); omegaconf imported on use."""
    from omegaconf import DictConfig, OmegaConf

    d = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    assert isinstance(d, dict)
    return d
