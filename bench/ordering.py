"""Benchmark of stroke ordering (markctl.layouts.ordering): speed, growth with size, and travel against LKH-3.

Run: ``.venv/bin/python bench/ordering.py`` (``--repeats N``, ``--lkh-runs N``, ``--no-lkh``). LKH-3
comes from the ``elkai`` package (a bench-only dependency, in the ``dev`` extra). Everything
printed is a ratio of quantities measured in this run, or a time on this machine:

1. A fixed set of marks, each composed the way users compose them: an import mark (two lines),
   a stockpile mark with a Data Matrix on a laser (hatched), 200 characters of text, the same 200
   characters with a Data Matrix, and a dot-peen mark (dots). For each: strokes, ordering time,
   and travel / LKH-3's travel on the same strokes. Goal: <= 1.05 on every mark.
   Then the same strokes ordered as a manifest's rows are (``ordering.order_parts``: each line
   and the code ordered on their own and remembered, joined, then mended): its time with nothing
   remembered (cold) and with every part remembered (warm: only the join and its mending), and
   its travel / LKH-3. Goal: <= 1.05 on every mark too.
2. Growth: ordering time over text marks of ~50 ... ~900 strokes; the exponent of a power-law fit
   (time ~ strokes^x) from 100 to 900 strokes. Goals: <= 50 ms at 900 strokes, x <= 1.3.

LKH solves the open tour with orientations as a symmetric TSP: each stroke is two nodes joined
by an edge that costs 0, every other edge costs the distance between endpoints plus a constant
large enough that no good tour breaks a stroke, and one dummy node opens the tour.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from markctl.layouts import MarkRequest, compose, ordering
from markctl.layouts.fonts import get_font
from markctl.layouts.toolpath import composed_strokes

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "requests"
FloatArray = np.ndarray


def _request(example: str, machine: str, **fields: str) -> MarkRequest:
    data = MarkRequest.from_toml((EXAMPLES / example).read_text("utf-8")).model_dump(mode="json")
    data["machine"] = machine
    data["fields"].update(fields)
    data["options"]["today"] = "2026-11-27"
    return MarkRequest.parse(data)


def _ends(strokes: list[FloatArray]) -> tuple[FloatArray, FloatArray]:
    return np.array([s[0] for s in strokes]), np.array([s[-1] for s in strokes])


# Stroke counts of each mark's parts (text lines, then the code), as toolpath orders them.
PARTS: dict[int, list[int]] = {}


def _layout_strokes(req: MarkRequest) -> list[FloatArray]:
    from markctl.layouts.toolpath import _parts

    layout = compose(req)
    strokes = [s.points for s in composed_strokes(layout)]
    PARTS[id(strokes)] = _parts(layout, len(strokes))
    return strokes


def _text_strokes(chars: int, height_mm: float = 2.0, per_line: int = 40, seed: int = 7) -> list[FloatArray]:
    """``chars`` characters of random serial-like text in the laser's stroke font, 40 per line."""
    font = get_font("hershey:futural")
    rng = np.random.default_rng(seed)
    alphabet = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
    out: list[FloatArray] = []
    parts: list[int] = []
    for k in range(chars):
        line, col = divmod(k, per_line)
        glyph = font.glyph(alphabet[int(rng.integers(len(alphabet)))])
        x0 = col * 0.8 * height_mm
        y0 = -line * 1.6 * height_mm
        out.extend(np.asarray(s) * height_mm + (x0, y0) for s in glyph.strokes if len(s) >= 2)
        if col == per_line - 1 or k == chars - 1:
            parts.append(len(out) - sum(parts))
    PARTS[id(out)] = parts
    return out


def _with_code(text: list[FloatArray], code_req: MarkRequest) -> list[FloatArray]:
    # The Data Matrix hatch of a real composed stockpile mark, put beside the text block.
    layout = compose(code_req)
    hatch = [s.points for s in composed_strokes(layout) if s.params == 1]
    x_max = max(float(s[:, 0].max()) for s in text)
    shift = np.array([x_max + 3.0, 0.0]) - hatch[0].min(axis=0)
    out = text + [h + shift for h in hatch]
    PARTS[id(out)] = [*PARTS[id(text)], len(hatch)]
    return out


def fixed_set() -> dict[str, list[FloatArray]]:
    data = _request("iti-import-steel-frame.toml", "grbl-1.1").model_dump(mode="json")
    data["facts"] = {"has_unique_mark": False}
    data["fields"]["serial"] = "BX0417265"
    imp = MarkRequest.parse(data)
    stock = _request("iti-stockpile-datamatrix.toml", "grbl-1.1", serial="0417265")
    # A pattern machine (telesis-tmp) gets fields, not strokes: the dot mark is the stockpile mark in
    # a dot font on a motion machine, which orders dot strokes (and one per Data Matrix row) as a
    # GRBL-driven dot-peen head would.
    peen_data = stock.model_dump(mode="json")
    peen_data["options"]["font"] = "5x7"
    text200 = _text_strokes(200)
    marks = {
        "import (2 lines)": _layout_strokes(imp),
        "stockpile + Data Matrix (laser)": _layout_strokes(stock),
        "200 characters": text200,
        "200 characters + Data Matrix": _with_code(text200, stock),
    }
    try:
        marks["dot mark: stockpile, 5x7 dots"] = _layout_strokes(MarkRequest.parse(peen_data))
    except Exception as exc:  # the bench still runs the rest if the process option is refused
        print(f"  (dot-peen mark not composed: {exc})")
    return marks


def lkh_travel(starts: FloatArray, ends: FloatArray, runs: int) -> float:
    import elkai  # type: ignore[import-untyped]

    n = len(starts)
    points = np.concatenate((starts, ends))
    d = np.hypot(*(points[:, None, :] - points[None, :, :]).transpose(2, 0, 1))
    # Integer costs in 10 um: every edge but a stroke's own costs C more, so a tour that breaks a
    # stroke pays C per break and gains at most a few longest edges (the assertion below checks).
    c = 3 * int(np.ceil(d.max() * 100)) + 1
    m = np.full((2 * n + 1, 2 * n + 1), c, dtype=np.int64)
    m[: 2 * n, : 2 * n] += np.rint(d * 100).astype(np.int64)
    i = np.arange(n)
    m[i, i + n] = m[i + n, i] = 0
    np.fill_diagonal(m, 0)
    ints = m
    tour = elkai.DistanceMatrix(ints.tolist()).solve_tsp(runs=runs)[:-1]
    at = tour.index(2 * n)
    path = tour[at + 1 :] + tour[:at]
    idx = np.array([v % n for v in path[::2]], dtype=np.intp)
    flip = np.array([v >= n for v in path[::2]])
    assert sorted(idx.tolist()) == list(range(n)), "LKH broke a stroke apart"
    return ordering.travel(starts, ends, idx, flip)


def _time(starts: FloatArray, ends: FloatArray, repeats: int) -> tuple[float, float]:
    # CPU time of this process, best of the repeats: on a shared machine the wall clock also counts
    # other processes' turns.
    best, length = math.inf, 0.0
    for _ in range(repeats):
        t0 = time.process_time()
        idx, flip = ordering.order(starts, ends)
        best = min(best, time.process_time() - t0)
        length = ordering.travel(starts, ends, idx, flip)
    return best, length


def _time_parts(
    starts: FloatArray, ends: FloatArray, parts: list[int], repeats: int
) -> tuple[float, float, float]:
    """CPU seconds of order_parts with nothing remembered and with every part remembered, and travel."""
    from markctl.layouts import _shared

    kicks = [ordering.DEFAULT_KICKS_PER_STROKE * c for c in parts]
    cold = warm = math.inf
    length = 0.0
    for _ in range(repeats):
        _shared.clear()
        t0 = time.process_time()
        idx, flip = ordering.order_parts(starts, ends, parts, kicks)
        cold = min(cold, time.process_time() - t0)
        t0 = time.process_time()
        again = ordering.order_parts(starts, ends, parts, kicks)
        warm = min(warm, time.process_time() - t0)
        assert np.array_equal(again[0], idx) and np.array_equal(again[1], flip), (
            "a remembered part changed the order"
        )
        length = ordering.travel(starts, ends, idx, flip)
    return cold, warm, length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lkh-runs", type=int, default=5)
    parser.add_argument("--no-lkh", action="store_true")
    args = parser.parse_args()
    ordering.order(np.zeros((2, 2)), np.ones((2, 2)))  # load the compiled kernels before timing

    print("times are CPU seconds of this process (best of repeats)")
    print("1. fixed set: ordering time and travel / LKH-3 travel on the same strokes")
    worst = worst_parts = 0.0
    for name, strokes in fixed_set().items():
        starts, ends = _ends(strokes)
        secs, ours = _time(starts, ends, args.repeats)
        parts = PARTS[id(strokes)]
        cold, warm, by_parts = _time_parts(starts, ends, parts, args.repeats)
        line = f"  {name:<34} {len(strokes):4d} strokes  {secs * 1000:7.1f} ms  travel {ours:8.1f} mm"
        line2 = (
            f"  {'  by parts ' + str(parts):<34} {'':4s}          cold {cold * 1000:5.1f} ms, "
            f"warm {warm * 1000:5.1f} ms  travel {by_parts:8.1f} mm"
        )
        if not args.no_lkh:
            t0 = time.perf_counter()
            ref = lkh_travel(starts, ends, args.lkh_runs)
            ratio = ours / ref if ref > 0 else 1.0
            worst = max(worst, ratio)
            worst_parts = max(worst_parts, by_parts / ref if ref > 0 else 1.0)
            line += f"  LKH {ref:8.1f} mm ({time.perf_counter() - t0:5.1f} s)  ratio {ratio:.3f}"
            line2 += f"  ratio {by_parts / ref if ref > 0 else 1.0:.3f}"
        print(line, flush=True)
        print(line2, flush=True)
    if not args.no_lkh:
        print(f"  worst travel / LKH-3 = {worst:.3f} ({'OK' if worst <= 1.05 else 'MISSES'} goal <= 1.05)")
        print(
            f"  by parts: worst travel / LKH-3 = {worst_parts:.3f} "
            f"({'OK' if worst_parts <= 1.05 else 'MISSES'} goal <= 1.05)"
        )

    print("2. growth: ordering time against strokes (text marks)")
    sizes, times = [], []
    for chars in (25, 50, 100, 200, 300, 450):
        starts, ends = _ends(_text_strokes(chars, seed=chars))
        secs, _ = _time(starts, ends, args.repeats)
        sizes.append(len(starts))
        times.append(secs)
        print(f"  {len(starts):4d} strokes  {secs * 1000:7.1f} ms", flush=True)
    x = np.log(np.array(sizes))
    in_range = (np.array(sizes) >= 90) & (np.array(sizes) <= 1000)
    slope = float(np.polyfit(x[in_range], np.log(np.array(times))[in_range], 1)[0])
    at900 = float(np.interp(900, sizes, times))
    print(
        f"  growth exponent {slope:.2f} ({'OK' if slope <= 1.3 else 'MISSES'} goal <= 1.3); "
        f"{at900 * 1000:.1f} ms at 900 strokes ({'OK' if at900 <= 0.05 else 'MISSES'} goal <= 50 ms)"
    )


if __name__ == "__main__":
    main()
