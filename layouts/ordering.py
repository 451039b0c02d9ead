"""Path ordering: nearest neighbour, then 2-opt and Or-opt over neighbour lists with perturbation, to cut travel.

A stroke is marked from its start to its end, or reversed (end to start); both are the same mark.
The tour is open (the head does not return). N(p) and X(p) are the endpoints where the stroke at
position p is eNtered and eXited in the current orientation.

* A 2-opt move reverses the run of positions a..b *and* flips each stroke in it, so only the two
  edges at the run's ends change:
  ``gain = d(X(a-1), N(a)) + d(X(b), N(b+1)) - d(X(a-1), X(b)) - d(N(a), N(b+1))``.
* An Or-opt move takes a run of 1..3 strokes out and puts it, either way round, between two other
  neighbours in the tour.

Moves are searched from an endpoint u only towards its k nearest endpoints v (from a k-d tree,
built once) that are nearer than u's own tour edge: an improving move makes at least one new edge
shorter than the edge it replaces (the gain criterion of Lin and Kernighan), so these few pairs
hold nearly all of them. Strokes wait in a queue and are searched again only when an edge next to
them changed ("don't-look bits"), so the work grows with the number of improving moves rather than
with the square of the stroke count. Then the local optimum is perturbed: two adjacent runs of
strokes trade places (a segment-insertion kick, the open-path form of the double bridge), the
neighbourhood of the kick is searched again, and the result is kept only if the tour got no longer
(iterated local search). The number of kicks is the work budget; it is a count, not a clock, so
the same strokes give the same order on every machine (goldens), and the caller ties it to the
mark's cycle time.

The inner loops are compiled with numba (a scalar loop per move is what this search is; numpy
cannot batch a sequence of dependent moves): _ordering_jit.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from markctl.layouts import _shared

__all__ = ["DEFAULT_KICKS_PER_STROKE", "nearest_neighbour", "order", "order_parts", "travel", "two_opt"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

_MIN_GAIN_MM = 1e-9
_NEIGHBOURS = 12  # per endpoint; dense Data Matrix hatching needs a few more than the usual 5-10
_OR_OPT = 3  # longest run an Or-opt move relocates
DEFAULT_KICKS_PER_STROKE = 2  # bench/ordering.py: within 1.05 x LKH-3 on its marks


def _oriented(
    starts: FloatArray, ends: FloatArray, idx: IntArray, flip: BoolArray
) -> tuple[FloatArray, FloatArray]:
    s = np.where(flip[:, None], ends[idx], starts[idx])
    e = np.where(flip[:, None], starts[idx], ends[idx])
    return s, e


def travel(starts: FloatArray, ends: FloatArray, idx: IntArray, flip: BoolArray) -> float:
    """Non-marking travel of an ordered, oriented tour (between strokes, open path)."""
    if len(idx) < 2:
        return 0.0
    s, e = _oriented(starts, ends, idx, flip)
    return float(np.hypot(*(s[1:] - e[:-1]).T).sum())


def _neighbour_lists(points: FloatArray, k: int) -> IntArray:
    """For each endpoint, its k nearest endpoints, nearest first (itself included)."""
    from scipy.spatial import cKDTree  # type: ignore[import-untyped]  # loaded when first needed

    k = min(k + 1, len(points))
    _, nb = cKDTree(points).query(points, k=k)
    out: IntArray = np.ascontiguousarray(np.asarray(nb, dtype=np.intp).reshape(len(points), k))
    return out


def nearest_neighbour(
    starts: FloatArray, ends: FloatArray, origin: tuple[float, float] = (0.0, 0.0)
) -> tuple[IntArray, BoolArray]:
    """Greedy tour from ``origin``: always go to the nearest free stroke end, either way round."""
    n = len(starts)
    if n == 0:
        return np.empty(0, dtype=np.intp), np.zeros(0, dtype=bool)
    points = np.ascontiguousarray(np.concatenate((starts, ends)), dtype=np.float64)
    from markctl.layouts import _ordering_jit as jit

    idx, flip = jit.nn_tour(points, _neighbour_lists(points, _NEIGHBOURS), float(origin[0]), float(origin[1]))
    return idx, flip


# --- public ------------------------------------------------------------------------------------


def _improve(
    starts: FloatArray, ends: FloatArray, idx: IntArray, flip: BoolArray, or_opt: int, kicks: int
) -> tuple[IntArray, BoolArray]:
    n = len(idx)
    if n < 2:
        return idx.copy(), flip.copy()
    points = np.ascontiguousarray(np.concatenate((starts, ends)), dtype=np.float64)
    nb = _neighbour_lists(points, _NEIGHBOURS)
    # The kicks' random draws come from a generator seeded with the stroke count: same strokes,
    # same order, on every run.
    rand = np.random.default_rng(n).integers(0, 2**31, size=(max(kicks, 0), 3), dtype=np.int64)
    from markctl.layouts import _ordering_jit as jit

    out_i, out_f = jit.ils(
        points, nb, np.ascontiguousarray(idx, dtype=np.intp).copy(), np.asarray(flip, dtype=np.bool_).copy(),
        or_opt, max(kicks, 0), rand,
    )  # fmt: skip
    return np.asarray(out_i, dtype=np.intp), np.asarray(out_f, dtype=np.bool_)


def two_opt(
    starts: FloatArray, ends: FloatArray, idx: IntArray, flip: BoolArray
) -> tuple[IntArray, BoolArray]:
    """Improve a tour with 2-opt moves (run reversal + stroke flips) until none gains."""
    return _improve(starts, ends, idx, flip, 0, 0)


def order(
    starts: FloatArray,
    ends: FloatArray,
    origin: tuple[float, float] = (0.0, 0.0),
    *,
    or_opt: int = _OR_OPT,
    kicks: int | None = None,
) -> tuple[IntArray, BoolArray]:
    """Nearest neighbour from ``origin``, then 2-opt/Or-opt local search with ``kicks`` perturbations.

    ``kicks`` is the work budget (default ``DEFAULT_KICKS_PER_STROKE`` per stroke); the approach
    from ``origin`` is not marking travel, so the tour may start anywhere.

    Returns:
        The stroke indices in marking order and which strokes to reverse.
    """
    n = len(starts)
    if n < 2:
        return np.arange(n, dtype=np.intp), np.zeros(n, dtype=bool)
    idx, flip = nearest_neighbour(starts, ends, origin)
    return _improve(starts, ends, idx, flip, or_opt, DEFAULT_KICKS_PER_STROKE * n if kicks is None else kicks)


# --- parts shared between rows -----------------------------------------------------------------

_PART_CACHE_SIZE = 512  # part orders (two int arrays of a line's strokes, ~2 KB each)
# Perturbations of the joined tour: one per two strokes and a few per join (a quarter of what
# ordering the whole costs); bench/ordering.py: within 1.05 x LKH-3 on its marks.
POLISH_KICKS_PER_STROKE = 0.5
POLISH_KICKS_PER_PART = 8


def _part_order(starts: FloatArray, ends: FloatArray, kicks: int) -> tuple[IntArray, BoolArray]:
    """:func:`order` of one part, from its lower-left corner; memoised on the part's strokes.

    The key is a digest of the endpoints and the budget: the order is a pure function of them,
    so a hit is what ordering the part again would give.
    """
    digest = hashlib.blake2b(starts.tobytes(), digest_size=16)
    digest.update(ends.tobytes())
    key = (len(starts), kicks, digest.digest())
    cache = _shared.lru("ordering.parts", _PART_CACHE_SIZE)
    hit = cache.get(key)
    if hit is not None:
        found: tuple[IntArray, BoolArray] = hit  # type: ignore[assignment]
        return found
    # From the corner of the part's bounds (a function of the strokes; nearest neighbour from a
    # corner sweeps a hatch row by row, from its first stroke it leaves rows behind to come back to).
    corner = np.minimum(starts.min(axis=0), ends.min(axis=0))
    idx, flip = order(starts, ends, origin=(float(corner[0]), float(corner[1])), kicks=kicks)
    idx.setflags(write=False)
    flip.setflags(write=False)
    cache.put(key, (idx, flip))
    return idx, flip


def order_parts(
    starts: FloatArray,
    ends: FloatArray,
    parts: Sequence[int],
    kicks: Sequence[int],
    origin: tuple[float, float] = (0.0, 0.0),
    *,
    polish_kicks: int | None = None,
) -> tuple[IntArray, BoolArray]:
    """Order strokes made of consecutive parts (a mark's lines, its code) that rows share.

    ``parts`` are the stroke counts of consecutive parts, ``kicks`` each part's search budget.
    Each part is ordered on its own (:func:`order`) and remembered, so a line that repeats from
    row to row (the maker, the country) is ordered once. The parts' tours are then ordered as
    reversible strokes (which part follows which, which way round), joined, and the joined tour
    gets a short local search (2-opt/Or-opt with ``polish_kicks`` perturbations, by default
    ``POLISH_KICKS_PER_STROKE`` per stroke and ``POLISH_KICKS_PER_PART`` per part) that mends the
    joins. Every step is a function of the strokes alone: the same strokes give the same order
    whether or not a part was remembered.

    Returns:
        The stroke indices in marking order and which strokes to reverse, as :func:`order`.
    """
    n = len(starts)
    if len(parts) < 2 or n < 2:
        return order(starts, ends, origin, kicks=int(sum(kicks)) if len(kicks) else None)
    tours: list[tuple[IntArray, BoolArray]] = []
    at = 0
    for count, budget in zip(parts, kicks, strict=True):
        if count:
            idx, flip = _part_order(starts[at : at + count], ends[at : at + count], budget)
            tours.append((idx + at, flip))
        at += count
    if at != n:
        raise ValueError(f"the parts count {at} strokes, there are {n}")
    # Join: each part's tour is one reversible "stroke" from its first entry to its last exit;
    # ordering those few (the same search as for strokes) decides which part follows which and
    # which way round it is marked (two lines read left to right are joined by marking one of
    # them right to left).
    entry = np.array([ends[i[0]] if f[0] else starts[i[0]] for i, f in tours])
    leave = np.array([starts[i[-1]] if f[-1] else ends[i[-1]] for i, f in tours])
    sequence, reverse = order(entry, leave, origin, kicks=DEFAULT_KICKS_PER_STROKE * len(tours))
    joined_i: list[IntArray] = []
    joined_f: list[BoolArray] = []
    for t, back in zip(sequence, reverse, strict=True):
        idx, flip = tours[t]
        joined_i.append(idx[::-1] if back else idx)
        joined_f.append(~flip[::-1] if back else flip)
    idx, flip = np.concatenate(joined_i), np.concatenate(joined_f)
    budget = (
        round(POLISH_KICKS_PER_STROKE * n) + POLISH_KICKS_PER_PART * len(tours)
        if polish_kicks is None
        else polish_kicks
    )
    return _improve(starts, ends, idx, flip, _OR_OPT, budget)
