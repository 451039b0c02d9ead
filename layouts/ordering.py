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

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_KICKS_PER_STROKE", "nearest_neighbour", "order", "travel", "two_opt"]

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
