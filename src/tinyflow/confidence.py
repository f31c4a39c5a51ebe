"""How far an accuracy can be trusted: 95 % confidence intervals of a measured accuracy and of a difference.

An accuracy measured on `n` images is a proportion `k / n` (k correct). Its interval is **Wilson's score interval**
(Wilson 1927; Agresti & Coull 1998 recommend it over the normal-approximation "Wald" interval, which collapses
to a point at 0 % and 100 % and undercovers at small n): the set of true accuracies `p` for which `k / n` is within
`z` standard errors `sqrt(p (1 - p) / n)`, solved for `p`. No resampling, no torch: a closed form of (k, n).

Whether two accuracies can be told apart is judged on the 95 % interval of their **difference**, by **Newcombe's
hybrid score interval** (Newcombe 1998, "Interval estimation for the difference between independent proportions",
method 10): the two Wilson intervals combined in quadrature about the observed difference,

    L = d - sqrt((p1 - l1)^2 + (u2 - p2)^2),   U = d + sqrt((u1 - p1)^2 + (p2 - l2)^2),   d = p1 - p2.

Two accuracies "cannot be told apart" when that interval holds 0. It treats the two measurements as independent
samples; for two models scored on the same images (int8 against float on one test split, two subnets on one val
split) the paired interval would be narrower, so "cannot be told apart" here is conservative — a difference called
real is real at the 95 % level, a difference called noise may be a small real one.

Used by the stages that measure an accuracy (`quantize`, `finetune`, `train`, `search`: metrics
`<name>_ci95_low` / `<name>_ci95_high` beside the accuracy and the number of images it was measured on), the report,
the sweep summary and the benchmarks' tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: the two-sided 95 % normal quantile
Z95 = 1.959963984540054
#: the name of the interval method, as printed
METHOD = "Wilson"
#: the name of the difference's interval, as printed
DIFFERENCE_METHOD = "Newcombe"
#: the suffixes of an accuracy's interval metrics (`accuracy_int8_ci95_low`)
LOW, HIGH = "ci95_low", "ci95_high"


def wilson(correct: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (low, high) in [0, 1] of `correct` successes out of `n` (n >= 1)."""
    if n < 1:
        raise ValueError(f"wilson: n must be at least 1, got {n}")
    p = min(max(float(correct) / n, 0.0), 1.0)
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    low = 0.0 if p == 0.0 else max(0.0, centre - half)
    return low, 1.0 if p == 1.0 else min(1.0, centre + half)


@dataclass(frozen=True)
class Interval:
    """An accuracy (0..1) measured on `n` images and its 95 % Wilson interval."""

    value: float
    n: int
    low: float
    high: float

    @classmethod
    def of(cls, accuracy: float, n: int) -> Interval:
        """The interval of an accuracy measured on `n` images (the count correct: `round(accuracy * n)`)."""
        n = int(n)
        low, high = wilson(round(float(accuracy) * n), n)
        return cls(float(accuracy), n, low, high)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def text(self, digits: int = 1) -> str:
        """`88.8 % (95 % CI 85.7–91.3, Wilson, n = 500)`."""
        return f"{100 * self.value:.{digits}f} % ({self.ci_text(digits)})"

    def ci_text(self, digits: int = 1) -> str:
        """`95 % CI 85.7–91.3, Wilson, n = 500`."""
        return f"95 % CI {100 * self.low:.{digits}f}–{100 * self.high:.{digits}f}, {METHOD}, n = {self.n:,}"


def interval(accuracy: float | None, n: float | None) -> Interval | None:
    """`Interval.of(accuracy, n)`, or None when either is unknown (or n < 1)."""
    if accuracy is None or n is None or int(n) < 1:
        return None
    return Interval.of(float(accuracy), int(n))


def format_accuracy(accuracy: float | None, n: float | None, digits: int = 1) -> str:
    """The accuracy with its interval (`88.8 % (95 % CI 85.7–91.3, Wilson, n = 500)`); without n, the accuracy
    alone; "—" when there is none."""
    if accuracy is None:
        return "—"
    iv = interval(accuracy, n)
    return f"{100 * accuracy:.{digits}f} %" if iv is None else iv.text(digits)


def difference(a: float, n_a: int, b: float, n_b: int) -> tuple[float, float, float]:
    """(a − b, low, high): the difference of two accuracies and its 95 % interval (Newcombe's hybrid score)."""
    ia, ib = Interval.of(a, n_a), Interval.of(b, n_b)
    d = ia.value - ib.value
    low = d - math.sqrt((ia.value - ia.low) ** 2 + (ib.high - ib.value) ** 2)
    high = d + math.sqrt((ia.high - ia.value) ** 2 + (ib.value - ib.low) ** 2)
    return d, low, high


def distinguishable(a: float, n_a: int, b: float, n_b: int) -> bool:
    """Whether accuracies `a` (on `n_a` images) and `b` (on `n_b`) can be told apart at 95 %: the interval of their
    difference does not hold 0."""
    _, low, high = difference(a, n_a, b, n_b)
    return not low <= 0.0 <= high


def difference_text(a: float, n_a: int, b: float, n_b: int, what: str = "difference") -> str:
    """`difference +1.20 points (95 % CI -2.7…+5.1, Newcombe): inside the interval: cannot be told apart`."""
    d, low, high = difference(a, n_a, b, n_b)
    verdict = (
        "inside the interval: cannot be told apart" if low <= 0.0 <= high else "outside the interval: a real difference"
    )
    ci = f"95 % CI {100 * low:+.1f}…{100 * high:+.1f}, {DIFFERENCE_METHOD}"
    return f"{what} {100 * d:+.2f} points ({ci}): {verdict}"


def ci_metrics(name: str, accuracy: float | None, n: float | None) -> dict[str, float]:
    """`{name_ci95_low: …, name_ci95_high: …}` for an accuracy metric `name` measured on `n` images ({} without)."""
    iv = interval(accuracy, n)
    if iv is None:
        return {}
    return {f"{name}_{LOW}": iv.low, f"{name}_{HIGH}": iv.high}


def spearman_interval(rho: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % interval of a Spearman correlation on `n` pairs: Fisher's z with the standard error sqrt(1.06 / (n − 3))
    of Fieller, Hartley & Pearson (1957), as for a Pearson correlation but wider by their factor 1.06."""
    if n <= 3:
        return -1.0, 1.0
    centre = math.atanh(max(-0.999999, min(0.999999, rho)))
    half = z * math.sqrt(1.06 / (n - 3))
    return math.tanh(centre - half), math.tanh(centre + half)


def dataset_size(loader: Any) -> int | None:
    """The number of samples a data loader serves (`len(loader.dataset)`), or None when it cannot say."""
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return None
