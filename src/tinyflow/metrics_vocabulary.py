"""One vocabulary for the memory and accuracy every stage's child run logs (docs/design.md §12).

A stage logs the network as it stands after it under the base names below; where it measures several networks the
names carry a prefix saying which (`largest.sram.peak_bytes` in `train`, `searched.flash.bytes` in `search`) and
where it logs a statistic a suffix (`fitting.sram.peak_bytes.median` in `space`). A stage that truly has no
accuracy says why in the child run's tag `accuracy.none`. `record` logs the names and keeps one headline per stage
in the run context (`ctx.extra["stage_figures"]`), which the parent run's pipeline figure draws.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SRAM_PEAK = "sram.peak_bytes"
SRAM_ARENA = "sram.arena_bytes"
FLASH = "flash.bytes"
ACCURACY_FLOAT = "accuracy.float"
ACCURACY_INT8 = "accuracy.int8"
MEMORY_NAMES = (SRAM_PEAK, SRAM_ARENA, FLASH)
ACCURACY_NAMES = (ACCURACY_FLOAT, ACCURACY_INT8)
#: the child run's tag of a stage without accuracy; its value says why
NO_ACCURACY_TAG = "accuracy.none"
#: suffixes of an accuracy's 95 % interval (`accuracy.int8.ci95_low`, Wilson: tinyflow.confidence) and the number
#: of images the accuracies were measured on (`accuracy.images`, under the same prefix)
CI_LOW, CI_HIGH = "ci95_low", "ci95_high"
EVAL_IMAGES = "accuracy.images"
#: where the run context keeps each stage's headline figures (stage -> {sram, flash, accuracy, ...})
CONTEXT_KEY = "stage_figures"


def figures(
    prefix: str = "",
    suffix: str = "",
    *,
    sram_peak: float | None = None,
    sram_arena: float | None = None,
    flash: float | None = None,
    accuracy_float: float | None = None,
    accuracy_int8: float | None = None,
) -> dict[str, float]:
    """The given figures under their vocabulary names (`<prefix>.<name>.<suffix>`); None values are left out."""
    values = {
        SRAM_PEAK: sram_peak,
        SRAM_ARENA: sram_arena,
        FLASH: flash,
        ACCURACY_FLOAT: accuracy_float,
        ACCURACY_INT8: accuracy_int8,
    }
    head = f"{prefix}." if prefix else ""
    tail = f".{suffix}" if suffix else ""
    return {f"{head}{name}{tail}": float(v) for name, v in values.items() if v is not None}


def intervals(
    prefix: str = "",
    *,
    n: float | None,
    accuracy_float: float | None = None,
    accuracy_int8: float | None = None,
) -> dict[str, float]:
    """The 95 % Wilson intervals of the given accuracies measured on `n` images (`<prefix>.accuracy.float.ci95_low`,
    `….ci95_high`) and `n` itself (`<prefix>.accuracy.images`); {} when `n` is unknown."""
    from tinyflow.confidence import interval

    head = f"{prefix}." if prefix else ""
    out: dict[str, float] = {}
    for name, value in ((ACCURACY_FLOAT, accuracy_float), (ACCURACY_INT8, accuracy_int8)):
        iv = interval(value, n)
        if iv is not None:
            out |= {f"{head}{name}.{CI_LOW}": iv.low, f"{head}{name}.{CI_HIGH}": iv.high}
    if out:
        out[f"{head}{EVAL_IMAGES}"] = float(n)  # type: ignore[arg-type]
    return out


def matches(metric: str, base: str) -> bool:
    """Whether `metric` is `base` with an optional prefix and suffix (`largest.flash.bytes` is `flash.bytes`)."""
    return f".{metric}.".find(f".{base}.") >= 0


def covers(names: Iterable[str], bases: Iterable[str]) -> list[str]:
    """The base names among `bases` that some metric of `names` carries."""
    names = list(names)
    return [b for b in bases if any(matches(n, b) for n in names)]


def coverage(metrics: Iterable[str], tags: Mapping[str, str]) -> dict[str, bool]:
    """Does a child run log memory (SRAM and flash) and accuracy (or say in its tag that it has none)?"""
    names = list(metrics)
    memory = set(covers(names, MEMORY_NAMES))
    return {
        "memory": bool(memory & {SRAM_PEAK, SRAM_ARENA}) and FLASH in memory,
        "accuracy": bool(covers(names, ACCURACY_NAMES)) or NO_ACCURACY_TAG in tags,
    }


def headline(values: Mapping[str, float], prefix: str = "", suffix: str = "") -> dict[str, Any]:
    """One stage's figures for the pipeline figure: SRAM (arena, else live peak), flash, accuracy (int8, else
    float), read from `values` under `prefix`/`suffix`."""

    def get(name: str) -> float | None:
        key = (f"{prefix}." if prefix else "") + name + (f".{suffix}" if suffix else "")
        return values.get(key)

    arena, peak = get(SRAM_ARENA), get(SRAM_PEAK)
    int8, flt = get(ACCURACY_INT8), get(ACCURACY_FLOAT)
    return {
        "sram": arena if arena is not None else peak,
        "flash": get(FLASH),
        "accuracy": int8 if int8 is not None else flt,
        "accuracy_kind": "int8" if int8 is not None else "float" if flt is not None else None,
        "what": " ".join(p for p in (prefix, suffix) if p) or "network",
    }


def record(
    ctx: Any,
    tracker: Any,
    stage: str,
    values: Mapping[str, float],
    *,
    prefix: str = "",
    suffix: str = "",
    no_accuracy: str | None = None,
) -> None:
    """Log `values` (vocabulary names) into the stage's child run, the tag `accuracy.none` when `no_accuracy`
    says why there is none, and keep the stage's headline (`headline(values, prefix, suffix)`) in the context."""
    tracker.log_metrics(dict(values))
    if no_accuracy:
        tag_stage_run(tracker, {NO_ACCURACY_TAG: no_accuracy})
    head = {**headline(values, prefix, suffix), "metrics": dict(values)}
    if no_accuracy:
        head["no_accuracy"] = no_accuracy
    ctx.extra.setdefault(CONTEXT_KEY, {})[stage] = head


def tag_stage_run(tracker: Any, tags: dict[str, str]) -> None:
    """Tags on the stage's own run (`MlflowTracker.set_tags(..., parent=False)`); a tracker whose `set_tags` takes
    no `parent` gets them as params of the current run."""
    try:
        tracker.set_tags(tags, parent=False)
    except TypeError:
        tracker.log_params(tags)
