"""Arena placement: an offset for every buffer so that buffers alive at the same step never overlap.

A buffer is (name, size bytes, first step, last step[, pieces]), steps inclusive; pieces give its occupancy
over time when that changes. No placement beats the lower bound: the most bytes alive at one step (the peak).
Algorithms (`memory.arena_algorithm`); the first-fit ones put each buffer, in their order, at the lowest offset
free over its lifetime:
- `first_fit_decreasing`: largest buffer first.
- `tflm_greedy`: TF Lite Micro's GreedyMemoryPlanner: largest first, equal sizes the later-created first.
- `longest_lived_first`: longest lifetime first (a long-lived buffer, such as a patch stage's assembled output,
  is pinned low before the short-lived ones it would otherwise be stacked on).
- `largest_area_first`: largest size × lifetime first.
- `greedy_by_breadth`: visit steps from the busiest (largest total live size) down, placing that step's
  unplaced buffers largest first into the tightest free gap (best fit) — the strategy TF Lite's
  memory planner names "greedy by breadth".
- `best` (default): all of the above, then, unless one already reaches the lower bound, a "squeaky wheel" search
  over first-fit orders (the buffers that set the arena's top move towards the front; bounded rounds); the
  smallest arena wins.
`check_no_overlap` verifies a placed plan tensor by tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tinyflow.errors import TinyflowError
from tinyflow.memory.config import ARENA_ALGORITHMS, check_arena_algorithm
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


class _Problem:
    """Buffers indexed 0..n-1 with, per buffer, the buffers it shares steps with and how it may sit next to them."""

    def __init__(self, buffers: Sequence[BufferSpec]):
        self.buffers = list(buffers)
        self.sizes = [b[1] for b in self.buffers]
        self.spans = [b[3] - b[2] + 1 for b in self.buffers]
        segs = [_segments(b) for b in self.buffers]
        n_steps = max((b[3] for b in self.buffers), default=-1) + 1
        breadth = [0] * n_steps
        for pieces in segs:
            for f, la, size in pieces:
                for s in range(f, la + 1):
                    breadth[s] += max(size, 0)
        self.breadth = breadth
        # i at offset o collides with j at p iff p - below < o < p + above (all overlapping pieces contain p,
        # so their forbidden intervals merge into one)
        self.conflicts: list[list[tuple[int, int, int]]] = [[] for _ in self.buffers]
        order = sorted(range(len(self.buffers)), key=lambda i: self.buffers[i][2])
        for k, i in enumerate(order):
            if self.sizes[i] <= 0:
                continue
            for j in order[k + 1 :]:
                if self.buffers[j][2] > self.buffers[i][3]:
                    break
                if self.sizes[j] <= 0:
                    continue
                below_i = above_i = 0  # i's pieces / j's pieces that meet in time
                for f1, l1, s1 in segs[i]:
                    for f2, l2, s2 in segs[j]:
                        if s1 > 0 and s2 > 0 and f1 <= l2 and f2 <= l1:
                            below_i, above_i = max(below_i, s1), max(above_i, s2)
                if below_i:
                    self.conflicts[i].append((j, below_i, above_i))
                    self.conflicts[j].append((i, above_i, below_i))

    @property
    def lower_bound(self) -> int:
        """No placement beats the largest total size alive at one step."""
        return max(self.breadth, default=0)

    def forbidden(self, i: int, offsets: list[int]) -> list[tuple[int, int]]:
        out = [(offsets[j] - below, offsets[j] + above) for j, below, above in self.conflicts[i] if offsets[j] >= 0]
        out.sort()
        return out

    def first_fit(self, order: Sequence[int]) -> list[int]:
        """Each buffer in `order` at the lowest offset free over its lifetime."""
        offsets = [-1] * len(self.buffers)
        for i in order:
            offsets[i] = 0 if self.sizes[i] <= 0 else _lowest(self.forbidden(i, offsets))
        return offsets

    def arena(self, offsets: Sequence[int]) -> int:
        return max((o + s for o, s in zip(offsets, self.sizes)), default=0)

    def named(self, offsets: Sequence[int]) -> dict[str, int]:
        return {b[0]: o for b, o in zip(self.buffers, offsets)}


def _order(p: _Problem, key: Callable[[int], tuple]) -> list[int]:  # type: ignore[type-arg]
    return sorted(range(len(p.buffers)), key=key)


def _by_size(p: _Problem) -> list[int]:
    return _order(p, lambda i: (-p.sizes[i], p.buffers[i][2], p.buffers[i][0]))


def _by_span(p: _Problem) -> list[int]:
    return _order(p, lambda i: (-p.spans[i], -p.sizes[i], p.buffers[i][2], p.buffers[i][0]))


def _by_area(p: _Problem) -> list[int]:
    return _order(p, lambda i: (-p.sizes[i] * p.spans[i], -p.sizes[i], p.buffers[i][2], p.buffers[i][0]))


def first_fit_decreasing(buffers: Sequence[BufferSpec]) -> dict[str, int]:
    p = _Problem(buffers)
    return p.named(p.first_fit(_by_size(p)))


def tflm_greedy(buffers: Sequence[BufferSpec]) -> dict[str, int]:
    """TF Lite Micro's GreedyMemoryPlanner: largest first, each at the lowest offset that no buffer alive at the
    same time occupies; equal sizes the later-created first (the order that reproduces the arena the tflite-micro
    wheel measures, e.g. 73,728 B rather than 64,512 B on Keras' MobileNetV1 0.25 at 96²)."""
    p = _Problem(buffers)
    return p.named(p.first_fit(_order(p, lambda i: (-p.sizes[i], -i))))


def longest_lived_first(buffers: Sequence[BufferSpec]) -> dict[str, int]:
    """First fit, the longest-lived buffer first (ties: larger first): a buffer that spans many steps is pinned
    low before the short-lived ones it would otherwise be stacked on."""
    p = _Problem(buffers)
    return p.named(p.first_fit(_by_span(p)))


def largest_area_first(buffers: Sequence[BufferSpec]) -> dict[str, int]:
    """First fit, the largest size × lifetime first."""
    p = _Problem(buffers)
    return p.named(p.first_fit(_by_area(p)))


def greedy_by_breadth(buffers: Sequence[BufferSpec]) -> dict[str, int]:
    p = _Problem(buffers)
    live_at: list[list[int]] = [[] for _ in p.breadth]
    for i, b in enumerate(p.buffers):
        for s in range(b[2], b[3] + 1):
            live_at[s].append(i)
    offsets = [-1] * len(p.buffers)
    for step in sorted(range(len(p.breadth)), key=lambda s: (-p.breadth[s], s)):
        for i in sorted(live_at[step], key=lambda i: (-p.sizes[i], p.buffers[i][2], p.buffers[i][0])):
            if offsets[i] < 0:
                offsets[i] = 0 if p.sizes[i] <= 0 else _best_fit(p.forbidden(i, offsets))
    return p.named(offsets)


_BASE: dict[str, Callable[[Sequence[BufferSpec]], dict[str, int]]] = {
    "first_fit_decreasing": first_fit_decreasing,
    "tflm_greedy": tflm_greedy,
    "greedy_by_breadth": greedy_by_breadth,
    "longest_lived_first": longest_lived_first,
    "largest_area_first": largest_area_first,
}


def _squeaky_wheel(p: _Problem, order: list[int], step: float, rounds: int, stop: int) -> list[int]:
    """Re-run first fit, each time moving the buffers that reach the arena's top from position k to k·step of the
    order (ahead of the buffers that pushed them up); the best placement seen (stops early at `stop` bytes)."""
    best: list[int] = []
    for _ in range(rounds):
        offs = p.first_fit(order)
        a = p.arena(offs)
        if not best or a < p.arena(best):
            best = offs
        if a <= stop:
            break
        for i in [i for i in order if offs[i] + p.sizes[i] == a]:
            k = order.index(i)
            order.insert(int(k * step), order.pop(k))
    return best


def search(buffers: Sequence[BufferSpec], rounds: int = 40) -> dict[str, int]:
    """The smallest arena of every algorithm above, then a "squeaky wheel" search over first-fit orders from each
    of their orders (two move lengths, `rounds` placements each); stops as soon as the arena equals the lower bound
    (the most bytes alive at one step)."""
    p = _Problem(buffers)
    lb = p.lower_bound
    starts = []
    for orderer in (_by_size, _by_span, _by_area):
        order = orderer(p)
        offs = p.first_fit(order)
        if p.arena(offs) <= lb:
            return p.named(offs)
        starts.append((p.arena(offs), order, offs))
    by_breadth = greedy_by_breadth(buffers)
    best = min([s[2] for s in starts] + [[by_breadth[b[0]] for b in p.buffers]], key=p.arena)
    starts.sort(key=lambda s: s[0])  # stable: ties keep the order above
    for step in (0.2, 0.5):
        for _, order, _ in starts:
            if p.arena(best) <= lb:
                return p.named(best)
            offs = _squeaky_wheel(p, list(order), step, rounds, lb)
            if p.arena(offs) < p.arena(best):
                best = offs
    return p.named(best)


_FUNCTIONS: dict[str, Callable[[Sequence[BufferSpec]], dict[str, int]]] = {**_BASE, "best": search}
#: the placement function of each name in `tinyflow.memory.config.ARENA_ALGORITHMS` (that tuple is the list)
ALGORITHMS = {name: _FUNCTIONS[name] for name in ARENA_ALGORITHMS}


def place(buffers: Sequence[BufferSpec], algorithm: str = "best") -> dict[str, int]:
    """Offsets for `buffers` by the named algorithm (`memory.arena_algorithm`)."""
    check_arena_algorithm(algorithm)
    return ALGORITHMS[algorithm](buffers)


def lower_bound(buffers: Sequence[BufferSpec]) -> int:
    """The most bytes alive at one step: no placement of `buffers` is smaller."""
    return _Problem(buffers).lower_bound


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
