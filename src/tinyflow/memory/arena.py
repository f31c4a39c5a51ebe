"""Arena placement: an offset for every buffer so that buffers alive at the same step never overlap.

A buffer is (name, size bytes, first step, last step[, pieces]), steps inclusive; pieces give its occupancy
over time when that changes. Algorithms
(`memory.arena_algorithm`):
- `first_fit_decreasing` (baseline): largest buffer first, each at the lowest offset free over its lifetime.
- `greedy_by_breadth`: visit steps from the busiest (largest total live size) down, placing that step's
  unplaced buffers largest first into the tightest free gap (best fit) — the strategy TF Lite's
  memory planner names "greedy by breadth".
- `best`: both, the smaller arena wins.
`check_no_overlap` verifies a placed plan tensor by tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tinyflow.errors import ConfigError, TinyflowError
from tinyflow.memory.plan import TensorAlloc

# (name, size, first step, last step) or (name, size, first, last, segments): `segments` are (first, last, bytes)
# pieces when the buffer's occupancy changes over its life (an in-place stride-2 depthwise output fills only the
# front of its input's buffer); size = the largest piece
BufferSpec = tuple


class PlanError(TinyflowError):
    """A plan is inconsistent (two live tensors overlap in the arena, or a tensor has no offset)."""


Segments = tuple[tuple[int, int, int], ...]


def _segments(b: Sequence) -> Segments:  # type: ignore[type-arg]
    return tuple(b[4]) if len(b) > 4 and b[4] else ((b[2], b[3], b[1]),)


def _forbidden(placed: list[tuple[int, Segments]], segs: Segments) -> list[tuple[int, int]]:
    """Open intervals (a, b) of offsets where a buffer with pieces `segs` would hit a placed one."""
    out = []
    for off, other in placed:
        for f1, l1, s1 in segs:
            if s1 <= 0:
                continue
            for f2, l2, s2 in other:
                if s2 > 0 and f1 <= l2 and f2 <= l1:
                    out.append((off - s1, off + s2))
    out.sort()
    return out


def _lowest(forbidden: list[tuple[int, int]], start: int = 0) -> int:
    o = start
    for a, b in forbidden:  # sorted by a: one pass suffices
        if a < o < b:
            o = b
    return o


def _feasible(forbidden: list[tuple[int, int]], o: int) -> bool:
    return not any(a < o < b for a, b in forbidden)


def _best_fit(forbidden: list[tuple[int, int]]) -> int:
    """The feasible offset (0 or just past an obstacle) with the least room before the next obstacle."""
    best: tuple[int, int] | None = None  # (slack, offset)
    for o in sorted({0, *(b for _, b in forbidden if b > 0)}):
        if not _feasible(forbidden, o):
            continue
        ahead = [a - o for a, _ in forbidden if a >= o]
        if ahead and (best is None or min(ahead) < best[0]):
            best = (min(ahead), o)
    return best[1] if best is not None else _lowest(forbidden)


def first_fit_decreasing(buffers: Sequence[BufferSpec]) -> dict[str, int]:
    offsets: dict[str, int] = {}
    placed: list[tuple[int, Segments]] = []
    for b in sorted(buffers, key=lambda b: (-b[1], b[2], b[0])):
        if b[1] <= 0:
            offsets[b[0]] = 0
            continue
        segs = _segments(b)
        offsets[b[0]] = _lowest(_forbidden(placed, segs))
        placed.append((offsets[b[0]], segs))
    return offsets


def greedy_by_breadth(buffers: Sequence[BufferSpec]) -> dict[str, int]:
    if not buffers:
        return {}
    n_steps = max(b[3] for b in buffers) + 1
    breadth = [0] * n_steps
    live_at: list[list[BufferSpec]] = [[] for _ in range(n_steps)]
    for b in buffers:
        for f, la, size in _segments(b):
            for i in range(f, la + 1):
                breadth[i] += size
        for i in range(b[2], b[3] + 1):
            live_at[i].append(b)
    offsets: dict[str, int] = {}
    placed: list[tuple[int, Segments]] = []
    for step in sorted(range(n_steps), key=lambda i: (-breadth[i], i)):
        for b in sorted(live_at[step], key=lambda b: (-b[1], b[2], b[0])):
            if b[0] in offsets:
                continue
            if b[1] <= 0:
                offsets[b[0]] = 0
                continue
            segs = _segments(b)
            offsets[b[0]] = _best_fit(_forbidden(placed, segs))
            placed.append((offsets[b[0]], segs))
    return offsets


_BASE: dict[str, Callable[[Sequence[BufferSpec]], dict[str, int]]] = {
    "first_fit_decreasing": first_fit_decreasing,
    "greedy_by_breadth": greedy_by_breadth,
}


def best_of(buffers: Sequence[BufferSpec]) -> dict[str, int]:
    """Run every algorithm above and keep the smallest arena (ties: the order above)."""
    results = [fn(buffers) for fn in _BASE.values()]
    return min(results, key=lambda offs: arena_size(buffers, offs))


ALGORITHMS: dict[str, Callable[[Sequence[BufferSpec]], dict[str, int]]] = {**_BASE, "best": best_of}


def place(buffers: Sequence[BufferSpec], algorithm: str = "first_fit_decreasing") -> dict[str, int]:
    """Offsets for `buffers` by the named algorithm (`memory.arena_algorithm`)."""
    try:
        fn = ALGORITHMS[algorithm]
    except KeyError:
        raise ConfigError(f"memory.arena_algorithm: '{algorithm}' is not one of {sorted(ALGORITHMS)}") from None
    return fn(buffers)


def arena_size(buffers: Sequence[BufferSpec], offsets: dict[str, int]) -> int:
    return max((offsets[b[0]] + b[1] for b in buffers), default=0)


def assign_offsets(tensors: Sequence[TensorAlloc], offsets: dict[str, int]) -> None:
    """Give every tensor the offset of its buffer."""
    for t in tensors:
        t.offset = offsets[t.buffer]


def _aliases(a: TensorAlloc, b: TensorAlloc, index: dict[str, TensorAlloc]) -> str | None:
    """How `b` reuses `a`'s storage ('view' / 'inplace'), following alias_of links back from b; else None."""
    kind: str | None = None
    cur = b
    seen = 0
    while cur.alias_of is not None and seen < len(index):
        kind = "view" if (cur.alias_kind == "view" and kind in (None, "view")) else "inplace"
        if cur.alias_of == a.name:
            return kind
        cur = index[cur.alias_of]
        seen += 1
    return None


def check_no_overlap(tensors: Sequence[TensorAlloc]) -> None:
    """Raise `PlanError` if two tensors alive at the same step share arena bytes (aliases excepted:
    a view may share its source's bytes while both live; an in-place output only at the step that consumes
    its input)."""
    index = {t.name: t for t in tensors}
    for t in tensors:
        if t.size > 0 and t.offset < 0:
            raise PlanError(f"plan: tensor '{t.name}' ({t.size} B) has no arena offset")
    live = sorted((t for t in tensors if t.size > 0), key=lambda t: (t.first_step, t.name))
    active: list[TensorAlloc] = []
    for t in live:
        active = [a for a in active if a.last_step >= t.first_step]
        for a in active:
            if a.offset < t.end and t.offset < a.end:
                kind = _aliases(a, t, index) or _aliases(t, a, index)
                if kind == "view":
                    continue
                if kind == "inplace" and min(a.last_step, t.last_step) == max(a.first_step, t.first_step):
                    continue
                raise PlanError(
                    f"plan: tensors '{a.name}' [{a.offset}, {a.end}) steps {a.first_step}-{a.last_step} and "
                    f"'{t.name}' [{t.offset}, {t.end}) steps {t.first_step}-{t.last_step} overlap while both live"
                )
        active.append(t)
