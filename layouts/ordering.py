"""Path ordering: nearest neighbour, then 2-opt with stroke reversal, to cut non-marking travel.

A stroke is marked from its start to its end, or reversed (end to start); both are the same mark.
The tour is open (the head does not return). A 2-opt move reverses a run of strokes *and* flips
each stroke in it, so only the two edges at the run's ends change length:

    gain(a, b) = d(E[a-1], S[a]) + d(E[b], S[b+1]) - d(E[a-1], E[b]) - d(S[a], S[b+1])

where S and E are the current start and end points. The gains of all (a, b) pairs are one numpy
expression, so a sweep costs O(n^2) array work rather than O(n^2) Python steps.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["nearest_neighbour", "order", "travel", "two_opt"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

_MIN_GAIN_MM = 1e-9
_MAX_MOVES = 20_000
_BATCH = 64  # improving moves considered per round


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


def nearest_neighbour(
    starts: FloatArray, ends: FloatArray, origin: tuple[float, float] = (0.0, 0.0)
) -> tuple[IntArray, BoolArray]:
    """Greedy tour from ``origin``: always go to the nearest free stroke end, either way round."""
    n = len(starts)
    free = np.ones(n, dtype=bool)
    idx = np.empty(n, dtype=np.intp)
    flip = np.zeros(n, dtype=bool)
    here = np.asarray(origin, dtype=np.float64)
    for k in range(n):
        ds = np.hypot(*(starts - here).T)
        de = np.hypot(*(ends - here).T)
        ds[~free] = np.inf
        de[~free] = np.inf
        i_s, i_e = int(np.argmin(ds)), int(np.argmin(de))
        if de[i_e] < ds[i_s]:
            idx[k], flip[k], here = i_e, True, starts[i_e]
        else:
            idx[k], flip[k], here = i_s, False, ends[i_s]
        free[idx[k]] = False
    return idx, flip


def _gains(starts: FloatArray, ends: FloatArray, idx: IntArray, flip: BoolArray) -> FloatArray:
    """gain[a, b] of reversing positions a..b (only a <= b is meaningful; the rest is -inf)."""
    n = len(idx)
    s, e = _oriented(starts, ends, idx, flip)
    prev_e = np.vstack((e[:1], e[:-1]))  # E[a-1]; row 0 is a placeholder, masked below
    next_s = np.vstack((s[1:], s[-1:]))  # S[b+1]; last row is a placeholder
    has_prev = np.arange(n) > 0
    has_next = np.arange(n) < n - 1
    old_a = np.where(has_prev, np.hypot(*(prev_e - s).T), 0.0)
    old_b = np.where(has_next, np.hypot(*(e - next_s).T), 0.0)
    new_a = np.hypot(prev_e[:, None, 0] - e[None, :, 0], prev_e[:, None, 1] - e[None, :, 1])
    new_a[~has_prev, :] = 0.0
    new_b = np.hypot(s[:, None, 0] - next_s[None, :, 0], s[:, None, 1] - next_s[None, :, 1])
    new_b[:, ~has_next] = 0.0
    gain = old_a[:, None] + old_b[None, :] - new_a - new_b
    gain[np.tril_indices(n, -1)] = -np.inf
    return gain


def two_opt(
    starts: FloatArray, ends: FloatArray, idx: IntArray, flip: BoolArray
) -> tuple[IntArray, BoolArray]:
    """Improve a tour with 2-opt moves (run reversal + stroke flips) until no move gains.

    Each round computes every move's gain at once and applies the best one together with other
    improving moves that do not interact with it: two reversals [a, b] and [c, d] with b + 1 < c
    touch disjoint edges and endpoints, so their gains add up exactly.
    """
    idx, flip = idx.copy(), flip.copy()
    n = len(idx)
    if n < 2:
        return idx, flip
    for _ in range(_MAX_MOVES):
        gain = _gains(starts, ends, idx, flip)
        flat = gain.ravel()
        k = min(_BATCH, flat.size)
        top = np.argpartition(flat, -k)[-k:]
        top = top[np.argsort(flat[top])[::-1]]
        if flat[top[0]] <= _MIN_GAIN_MM:
            break
        taken: list[tuple[int, int]] = []
        for cell in top:
            if flat[cell] <= _MIN_GAIN_MM:
                break
            a, b = divmod(int(cell), n)
            if all(b + 1 < c or d + 1 < a for c, d in taken):
                taken.append((a, b))
        for a, b in taken:
            idx[a : b + 1] = idx[a : b + 1][::-1]
            flip[a : b + 1] = ~flip[a : b + 1][::-1]
    return idx, flip


def order(
    starts: FloatArray, ends: FloatArray, origin: tuple[float, float] = (0.0, 0.0)
) -> tuple[IntArray, BoolArray]:
    """Nearest neighbour from ``origin``, then 2-opt. Returns stroke indices and which to reverse."""
    idx, flip = nearest_neighbour(starts, ends, origin)
    return two_opt(starts, ends, idx, flip)
