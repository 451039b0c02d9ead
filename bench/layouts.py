"""Benchmark of markctl.layouts: preparation time against the machine's cycle time, and travel.

Run: ``.venv/bin/python bench/layouts.py`` (options: ``--items N``, ``--motion-items N``,
``--manifest N``, ``--lkh-items N``). Everything is a ratio of quantities measured in this
run, so the figures hold on any machine:

1. Preparation (compose + check + program) per item, over distinct serials, against the mark's
   estimated cycle time from the machine profile. Goal: median ratio <= 1/1000.
   * standard import mark (iti-import, two lines: country/year and serial) on grbl-1.1 (laser);
   * stockpile mark with a Data Matrix (iti-stockpile) on telesis-tmp (dot-peen pattern machine);
   * the same stockpile mark on grbl-1.1 (laser, Data Matrix as fill hatching), fewer items
     because ordering its ~400 strokes dominates the run time.
2. Compose + check of N items (no program). The pre-check users run is timed by
   bench/precheck.py; this is the layout part of it alone. Goal: well under 60 s.
3. Travel: optimised non-marking travel against a strong reference, LKH-3 (``elkai``, see
   bench/ordering.py) on the same strokes, over a few motion items. Goal <= 1.05. Travel in
   composed (reading) order is printed for scale only: its ratio says nothing about quality (the
   optimum of a two-line import mark is 0.70 of the composed order).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from markctl.layouts import MarkRequest, check, compose, ordering, program_stats
from markctl.layouts.program import MotionProgram
from markctl.layouts.toolpath import build_program, composed_strokes
from markctl.profiles import FirmwareProfile, load_profile

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "requests"


def _request(example: str, machine: str, **fields: str) -> MarkRequest:
    data = MarkRequest.from_toml((EXAMPLES / example).read_text("utf-8")).model_dump(mode="json")
    data["machine"] = machine
    data["fields"].update(fields)
    data["options"]["today"] = "2026-11-27"
    return MarkRequest.parse(data)


def _import_base() -> MarkRequest:
    # Two lines: an inadequately marked weapon gets country + year and a unique serial (ISACS-IMP).
    data = _request("iti-import-steel-frame.toml", "grbl-1.1").model_dump(mode="json")
    data["facts"] = {"has_unique_mark": False}
    data["fields"]["serial"] = "X0000000"
    return MarkRequest.parse(data)


def _serial(i: int) -> str:
    return f"{'ABCDEFGHJK'[i % 10]}{i:07d}"


def _prep(
    base: MarkRequest, machine: FirmwareProfile, n: int, field: str
) -> tuple[list[float], list[float], list[MotionProgram]]:
    preps, ratios, motions = [], [], []
    for i in range(n):
        req = base.with_fields(**{field: _serial(i)})
        t0 = time.perf_counter()
        layout = compose(req, machine=machine)
        report = check(layout)
        prog = build_program(layout, machine)
        prep = time.perf_counter() - t0
        assert report.passed, [f.rule for f in report.errors]
        cycle = program_stats(prog, machine).cycle_time_s
        preps.append(prep)
        ratios.append(prep / cycle)
        if isinstance(prog, MotionProgram):
            motions.append(prog)
    return preps, ratios, motions


def _travel(base: MarkRequest, machine: FirmwareProfile, n: int, field: str) -> tuple[float, float]:
    composed_total = optimised_total = 0.0
    for i in range(n):
        layout = compose(base.with_fields(**{field: _serial(i)}), machine=machine)
        plain = build_program(layout, machine, optimise=False)
        best = build_program(layout, machine)
        assert isinstance(plain, MotionProgram) and isinstance(best, MotionProgram)
        composed_total += plain.travel_length_mm
        optimised_total += best.travel_length_mm
    return optimised_total, composed_total


def _against_lkh(base: MarkRequest, machine: FirmwareProfile, n: int, field: str, runs: int) -> list[float]:
    from ordering import lkh_travel  # bench/ordering.py, beside this file

    ratios = []
    for i in range(n):
        layout = compose(base.with_fields(**{field: _serial(i)}), machine=machine)
        strokes = composed_strokes(layout)
        starts = np.array([s.points[0] for s in strokes])
        ends = np.array([s.points[-1] for s in strokes])
        idx, flip = ordering.order(starts, ends, origin=(0.0, 0.0))
        ours = ordering.travel(starts, ends, idx, flip)
        ref = lkh_travel(starts, ends, runs)
        ratios.append(ours / ref if ref > 0 else 1.0)
    return ratios


def _line(name: str, preps: list[float], ratios: list[float]) -> None:
    med = statistics.median(ratios)
    print(
        f"  {name:<44} n={len(preps):5d}  median prep {statistics.median(preps) * 1000:8.2f} ms  "
        f"median prep/cycle {med:.2e} (1/{1 / med:,.0f})  max {max(ratios):.2e}  "
        f"{'OK' if med <= 1e-3 else 'MISSES'} goal <= 1/1000"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--motion-items", type=int, default=200)
    parser.add_argument("--manifest", type=int, default=10_000)
    parser.add_argument("--lkh-items", type=int, default=3)
    parser.add_argument("--lkh-runs", type=int, default=1)
    args = parser.parse_args()

    grbl, telesis = load_profile("grbl-1.1"), load_profile("telesis-tmp")
    imp = _import_base()
    stock_pattern = _request("iti-stockpile-datamatrix.toml", "telesis-tmp")
    stock_laser = _request("iti-stockpile-datamatrix.toml", "grbl-1.1")
    compose(imp, machine=grbl)  # warm caches (fonts, rule book, materials) before timing

    print("1. preparation (compose + check + program) vs estimated cycle time, distinct serials")
    preps, ratios, _ = _prep(imp, grbl, args.items, "serial")
    _line("import mark, 2 lines, grbl-1.1 laser", preps, ratios)
    preps, ratios, _ = _prep(stock_pattern, telesis, args.items, "serial")
    _line("stockpile + Data Matrix, telesis-tmp pattern", preps, ratios)
    preps, ratios, _ = _prep(stock_laser, grbl, args.motion_items, "serial")
    _line("stockpile + Data Matrix, grbl-1.1 laser hatch", preps, ratios)

    print(f"2. pre-check of a {args.manifest:,}-item manifest (compose + check), one process")
    t0 = time.perf_counter()
    failed = 0
    for i in range(args.manifest):
        failed += not check(compose(imp.with_fields(serial=_serial(i)), machine=grbl)).passed
    total = time.perf_counter() - t0
    print(
        f"  {total:.1f} s for {args.manifest:,} items ({total / args.manifest * 1000:.2f} ms each, "
        f"{failed} non-compliant); ratio to 60 s: {total / 60:.2f} "
        f"({'OK' if total < 60 else 'MISSES'} goal well under a minute)"
    )

    print("3. non-marking travel: optimised vs composed (reading) order, and vs LKH-3")
    o1, c1 = _travel(imp, grbl, min(args.items, 200), "serial")
    o2, c2 = _travel(stock_laser, grbl, min(args.motion_items, 50), "serial")
    for name, o, c in (
        ("import mark", o1, c1),
        ("stockpile + Data Matrix", o2, c2),
    ):
        print(f"  {name:<26} optimised/composed = {o / c:.3f} (for scale; no goal)")
    r1 = _against_lkh(imp, grbl, args.lkh_items, "serial", args.lkh_runs)
    r2 = _against_lkh(stock_laser, grbl, args.lkh_items, "serial", args.lkh_runs)
    worst = max(r1 + r2)
    print(
        f"  optimised / LKH-3 on the same strokes: import median {statistics.median(r1):.3f}, "
        f"stockpile median {statistics.median(r2):.3f}, worst {worst:.3f} "
        f"({'OK' if worst <= 1.05 else 'MISSES'} goal <= 1.05)"
    )


if __name__ == "__main__":
    main()
