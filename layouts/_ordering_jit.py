"""The compiled inner loops of ordering.py (numba): nearest neighbour, 2-opt/Or-opt search, kicks.

Separate from ordering.py so that importing markctl (the CLI, the service) does not load numba and
LLVM; they load the first time a motion program is ordered. The compiled code is cached on disk
next to this file (``cache=True``), so a new process loads it instead of compiling again. The
algorithm is described in ordering.py.
"""

# mypy: disable-error-code="no-untyped-def"

from __future__ import annotations

import numpy as np
from numba import njit

_KICK_RUN = 30  # longest run a kick moves (10 leaves dense hatching ~4 % longer)

# Node u < n is the start of stroke u, node u >= n its end. -1 stands for "no node" (before the
# first or after the last position) and is at distance 0 from everything.


@njit(cache=True)
def _d(points, a, b):
    if a < 0 or b < 0:
        return 0.0
    dx = points[a, 0] - points[b, 0]
    dy = points[a, 1] - points[b, 1]
    return np.sqrt(dx * dx + dy * dy)


@njit(cache=True)
def _entry(idx, flip, n, p):
    if p < 0 or p >= n:
        return -1
    return idx[p] + n if flip[p] else idx[p]


@njit(cache=True)
def _exit(idx, flip, n, p):
    if p < 0 or p >= n:
        return -1
    return idx[p] if flip[p] else idx[p] + n


@njit(cache=True)
def nn_tour(points, nb, ox, oy):
    n = points.shape[0] // 2
    idx = np.empty(n, dtype=np.intp)
    flip = np.zeros(n, dtype=np.bool_)
    free = np.ones(n, dtype=np.bool_)
    hx, hy = ox, oy
    node = -1
    for k in range(n):
        nxt = -1
        if node >= 0:
            for c in range(nb.shape[1]):
                v = nb[node, c]
                if free[v % n]:
                    nxt = v
                    break
        if nxt < 0:  # every listed neighbour is taken: scan the free rest
            best = np.inf
            for v in range(2 * n):
                if free[v % n]:
                    dx = points[v, 0] - hx
                    dy = points[v, 1] - hy
                    dd = dx * dx + dy * dy
                    if dd < best:
                        best = dd
                        nxt = v
        s = nxt % n
        idx[k] = s
        flip[k] = nxt >= n  # entered at its end: reversed
        free[s] = False
        node = s if nxt >= n else s + n  # the endpoint it is left from
        hx, hy = points[node, 0], points[node, 1]
    return idx, flip


@njit(cache=True)
def _two_opt_gain(points, idx, flip, n, a, b):
    xa = _exit(idx, flip, n, a - 1)
    na = _entry(idx, flip, n, a)
    xb = _exit(idx, flip, n, b)
    nb1 = _entry(idx, flip, n, b + 1)
    return _d(points, xa, na) + _d(points, xb, nb1) - _d(points, xa, xb) - _d(points, na, nb1)


@njit(cache=True)
def _or_opt_gain(points, idx, flip, n, i, length, j, rev):
    a = _entry(idx, flip, n, i)
    b = _exit(idx, flip, n, i + length - 1)
    before = _exit(idx, flip, n, i - 1)
    after = _entry(idx, flip, n, i + length)
    removal = _d(points, before, a) + _d(points, b, after) - _d(points, before, after)
    xj = _exit(idx, flip, n, j)
    nj = _entry(idx, flip, n, j + 1)
    x, y = (b, a) if rev else (a, b)
    return removal - (_d(points, xj, x) + _d(points, y, nj) - _d(points, xj, nj))


@njit(cache=True)
def _reverse(idx, flip, pos, a, b):
    while a < b:
        idx[a], idx[b] = idx[b], idx[a]
        flip[a], flip[b] = not flip[b], not flip[a]
        pos[idx[a]] = a
        pos[idx[b]] = b
        a += 1
        b -= 1
    if a == b:
        flip[a] = not flip[a]


@njit(cache=True)
def _move_run(idx, flip, pos, i, length, j, rev, buf_i, buf_f):
    """Move run [i, i+length) to after position j (in the tour as it is now); returns the range touched."""
    for k in range(length):
        src = i + length - 1 - k if rev else i + k
        buf_i[k] = idx[src]
        buf_f[k] = (not flip[src]) if rev else flip[src]
    if j > i:  # shift i+length..j left, run goes at the end of the range
        for p in range(i + length, j + 1):
            idx[p - length] = idx[p]
            flip[p - length] = flip[p]
        at = j - length + 1
        lo, hi = i, j
    else:  # shift j+1..i-1 right, run goes at j+1
        for p in range(i - 1, j, -1):
            idx[p + length] = idx[p]
            flip[p + length] = flip[p]
        at = j + 1
        lo, hi = j + 1, i + length - 1
    for k in range(length):
        idx[at + k] = buf_i[k]
        flip[at + k] = buf_f[k]
    for p in range(lo, hi + 1):
        pos[idx[p]] = p
    return lo, hi


@njit(cache=True)
def _push(queue, inq, head, count, s):
    if not inq[s]:
        inq[s] = True
        queue[(head + count) % queue.shape[0]] = s
        count += 1
    return count


@njit(cache=True)
def _push_around(queue, inq, head, count, idx, n, lo, hi, reach):
    for p in range(max(lo - 1, 0), min(lo + reach + 1, n)):
        count = _push(queue, inq, head, count, idx[p])
    for p in range(max(hi - reach, 0), min(hi + 2, n)):
        count = _push(queue, inq, head, count, idx[p])
    return count


@njit(cache=True)
def _search(points, nb, idx, flip, pos, queue, inq, head, count, or_opt, buf_i, buf_f):
    """Local search from the queued strokes until none has an improving move; returns the total gain."""
    n = idx.shape[0]
    total = 0.0
    while count > 0:
        s = queue[head]
        head = (head + 1) % queue.shape[0]
        count -= 1
        inq[s] = False
        p = pos[s]
        best = 1e-9
        kind = -1  # 0: 2-opt (a, b); L >= 1: Or-opt of L strokes (a = i, b = j, rev)
        ba, bb, brev = 0, 0, False
        for side in range(2):
            u_entry = side == 0
            u = _entry(idx, flip, n, p) if u_entry else _exit(idx, flip, n, p)
            other = _exit(idx, flip, n, p - 1) if u_entry else _entry(idx, flip, n, p + 1)
            r = _d(points, u, other)
            if r <= 1e-9:
                continue
            for c in range(nb.shape[1]):
                v = nb[u, c]
                if _d(points, u, v) >= r:
                    break  # sorted by distance: no nearer endpoint is left
                sv = v % n
                if sv == s:
                    continue
                q = pos[sv]
                v_entry = (v >= n) == flip[q]
                if u_entry == v_entry:
                    lo, hi = min(p, q), max(p, q)
                    a, b = (lo, hi - 1) if u_entry else (lo + 1, hi)
                    if a <= b:
                        g = _two_opt_gain(points, idx, flip, n, a, b)
                        if g > best:
                            best, kind, ba, bb = g, 0, a, b
                for length in range(1, or_opt + 1):
                    i = p if u_entry else p - length + 1
                    if i < 0 or i + length > n or length >= n:
                        continue
                    j = q - 1 if v_entry else q
                    if i - 1 <= j <= i + length - 1:
                        continue
                    rev = u_entry == v_entry
                    g = _or_opt_gain(points, idx, flip, n, i, length, j, rev)
                    if g > best:
                        best, kind, ba, bb, brev = g, length, i, j, rev
        if kind < 0:
            continue
        total += best
        if kind == 0:
            _reverse(idx, flip, pos, ba, bb)
            lo, hi = ba, bb
        else:
            lo, hi = _move_run(idx, flip, pos, ba, kind, bb, brev, buf_i, buf_f)
        count = _push_around(queue, inq, head, count, idx, n, lo, hi, 1)
        count = _push(queue, inq, head, count, s)
    return total


@njit(cache=True)
def ils(points, nb, idx, flip, or_opt, kicks, rand):
    n = idx.shape[0]
    pos = np.empty(n, dtype=np.intp)
    for p in range(n):
        pos[idx[p]] = p
    queue = np.empty(n, dtype=np.intp)
    inq = np.zeros(n, dtype=np.bool_)
    buf_i = np.empty(max(n, 1), dtype=np.intp)
    buf_f = np.empty(max(n, 1), dtype=np.bool_)
    count = 0
    for p in range(n):
        count = _push(queue, inq, 0, count, idx[p])
    _search(points, nb, idx, flip, pos, queue, inq, 0, count, or_opt, buf_i, buf_f)
    if n < 4:
        return idx, flip
    save_i, save_f, save_p = idx.copy(), flip.copy(), pos.copy()
    for k in range(kicks):
        # Runs [p+1, p+l1] and [p+l1+1, p+l1+l2] trade places; three edges change.
        l1 = 1 + rand[k, 1] % min(_KICK_RUN, n // 2)
        l2 = 1 + rand[k, 2] % min(_KICK_RUN, n // 2)
        if l1 + l2 > n:
            continue
        p = -1 + rand[k, 0] % (n - l1 - l2 + 1)
        x0 = _exit(idx, flip, n, p)
        a1, b1 = _entry(idx, flip, n, p + 1), _exit(idx, flip, n, p + l1)
        a2, b2 = _entry(idx, flip, n, p + l1 + 1), _exit(idx, flip, n, p + l1 + l2)
        y0 = _entry(idx, flip, n, p + l1 + l2 + 1)
        delta = (
            _d(points, x0, a2) + _d(points, b2, a1) + _d(points, b1, y0)
            - _d(points, x0, a1) - _d(points, b1, a2) - _d(points, b2, y0)
        )  # fmt: skip
        lo, hi = _move_run(idx, flip, pos, p + l1 + 1, l2, p, False, buf_i, buf_f)
        count = 0
        count = _push_around(queue, inq, 0, count, idx, n, lo, hi, 0)
        for q in range(max(p + l2, 0), min(p + l2 + 2, n)):
            count = _push(queue, inq, 0, count, idx[q])
        gain = _search(points, nb, idx, flip, pos, queue, inq, 0, count, or_opt, buf_i, buf_f)
        if gain - delta >= -1e-9:  # no longer than before: keep (sideways steps help to escape)
            save_i[:] = idx
            save_f[:] = flip
            save_p[:] = pos
        else:
            idx[:] = save_i
            flip[:] = save_f
            pos[:] = save_p
    return idx, flip
