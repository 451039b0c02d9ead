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
_MULTI_START_BUDGET = 200  # strokes x starts: several starts only for small programs


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


def _or_opt_move(
    starts: FloatArray, ends: FloatArray, idx: IntArray, flip: BoolArray, max_len: int
) -> tuple[IntArray, BoolArray] | None:
    """The best single Or-opt move (relocate a run of 1..max_len strokes, either way round), or None.

    Removing run [i, i+L) saves d(E[i-1], S[i]) + d(E[i+L-1], S[i+L]) - d(E[i-1], S[i+L]);
    inserting it into edge (j, j+1) costs d(E[j], A) + d(B, S[j+1]) - d(E[j], S[j+1]) where
    (A, B) is the run's (start, end), or (end, start) when it goes in reversed. Position -1 and
    n-1 stand for "before the first" and "after the last" stroke.
    """
    n = len(idx)
    s, e = _oriented(starts, ends, idx, flip)
    best_gain, best_move = _MIN_GAIN_MM, None
    pos = np.arange(-1, n)  # insertion edges: after position j (j = -1: before the first)
    e_j = np.vstack((np.full((1, 2), np.nan), e))  # E[j]; NaN for j = -1
    s_next = np.vstack((s, np.full((1, 2), np.nan)))  # S[j+1]; NaN for j = n-1
    base = np.nan_to_num(np.hypot(*(e_j - s_next).T), nan=0.0)

    def dist(a: FloatArray, b: FloatArray) -> FloatArray:
        # Pairwise distances (runs x edges); a NaN point stands for "no neighbour" and costs 0.
        d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
        out: FloatArray = np.nan_to_num(d, nan=0.0)
        return out

    for length in range(1, min(max_len, n - 1) + 1):
        first = np.arange(0, n - length + 1)  # every run [i, i + length)
        last = first + length - 1
        a, b = s[first], e[last]
        prev_e = np.where((first > 0)[:, None], e[np.maximum(first - 1, 0)], np.nan)
        next_s = np.where((last + 1 < n)[:, None], s[np.minimum(last + 1, n - 1)], np.nan)
        removal = (
            np.nan_to_num(np.hypot(*(prev_e - a).T), nan=0.0)
            + np.nan_to_num(np.hypot(*(b - next_s).T), nan=0.0)
            - np.nan_to_num(np.hypot(*(prev_e - next_s).T), nan=0.0)
        )
        keep = removal > _MIN_GAIN_MM  # only runs whose removal saves travel can gain
        if not keep.any():
            continue
        first, last, a, b, removal = first[keep], last[keep], a[keep], b[keep], removal[keep]
        valid = (pos[None, :] < first[:, None] - 1) | (pos[None, :] > last[:, None])
        for reverse, (ra, rb) in ((False, (a, b)), (True, (b, a))):
            cost = dist(ra, e_j) + dist(rb, s_next) - base[None, :]
            gain = np.where(valid, removal[:, None] - cost, -np.inf)
            cell = int(np.argmax(gain))
            i, j = divmod(cell, n + 1)
            if gain[i, j] > best_gain:
                best_gain, best_move = float(gain[i, j]), (int(first[i]), length, int(pos[j]), reverse)
    if best_move is None:
        return None
    i, length, j, reverse = best_move
    seg_idx, seg_flip = idx[i : i + length], flip[i : i + length]
    if reverse:
        seg_idx, seg_flip = seg_idx[::-1], ~seg_flip[::-1]
    rest_idx = np.concatenate((idx[:i], idx[i + length :]))
    rest_flip = np.concatenate((flip[:i], flip[i + length :]))
    at = j + 1 if j < i else j + 1 - length  # insertion point in the shortened tour
    return (
        np.concatenate((rest_idx[:at], seg_idx, rest_idx[at:])),
        np.concatenate((rest_flip[:at], seg_flip, rest_flip[at:])),
    )


def _local_search(
    starts: FloatArray, ends: FloatArray, idx: IntArray, flip: BoolArray, or_opt: int
) -> tuple[IntArray, BoolArray]:
    idx, flip = two_opt(starts, ends, idx, flip)
    for _ in range(_MAX_MOVES):
        if or_opt < 1 or len(idx) < 3:
            break
        moved = _or_opt_move(starts, ends, idx, flip, or_opt)
        if moved is None:
            break
        idx, flip = two_opt(starts, ends, *moved)
    return idx, flip


def order(
    starts: FloatArray, ends: FloatArray, origin: tuple[float, float] = (0.0, 0.0), *, or_opt: int = 3
) -> tuple[IntArray, BoolArray]:
    """Nearest neighbour, then 2-opt alternating with Or-opt moves of up to ``or_opt`` strokes.

    The approach from ``origin`` is not marking travel, so the tour may start anywhere. Small
    programs (a few dozen strokes, where it costs milliseconds) are also searched from other
    starts: nearest-neighbour tours from strokes spread along the layout, and random tours from a
    generator seeded with the stroke count, so the result is the same on every run (goldens). The
    shortest tour wins.

    Returns:
        The stroke indices in marking order and which strokes to reverse.
    """
    n = len(starts)
    if n < 2:
        return np.arange(n, dtype=np.intp), np.zeros(n, dtype=bool)
    idx, flip = _local_search(starts, ends, *nearest_neighbour(starts, ends, origin), or_opt)
    best = travel(starts, ends, idx, flip)
    tries = max(0, min(n, _MULTI_START_BUDGET // n) - 1)
    by_x = np.argsort(starts[:, 0], kind="stable")
    rng = np.random.default_rng(n)
    for t in range(2 * tries):
        if t < tries:
            point = starts[by_x[round(t * (n - 1) / max(1, tries - 1))]]
            first = nearest_neighbour(starts, ends, (float(point[0]), float(point[1])))
        else:
            first = (rng.permutation(n).astype(np.intp), rng.random(n) < 0.5)
        cand = _local_search(starts, ends, *first, or_opt)
        length = travel(starts, ends, *cand)
        if length < best - _MIN_GAIN_MM:
            (idx, flip), best = cand, length
    return idx, flip
