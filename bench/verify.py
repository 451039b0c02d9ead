"""Verification benchmark: the confusion matrix on a labelled set, time and peak memory at 12 MP.

The set (markctl.verify.testset, generated from a seed, nothing stored): burned workpieces and
synthetic photos of them (scale, rotation up to 15 degrees, perspective, blur, noise, uneven light,
brushed surface, PNG or JPEG), half checked against the record shown and half against a record
one small step away (one digit, one letter, two digits transposed, another agency). Goals: false
accept 0 of N; false reject <= 2 %.

Then a few 12-megapixel JPEG photos are checked in a child process, which reports the time per
photo, its ratio to merely decoding the same JPEG (same run, same machine), and the child's peak
resident memory above its footprint after imports.

    .venv/bin/python bench/verify.py [--cases 64] [--seed 11] [--big 3]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from markctl.verify import verify_photo, verify_workpiece
from markctl.verify.testset import burn, cases, make_mark, synth_photo


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _big_child(paths: list[str], fields: tuple[tuple[str, str], ...], machine: str, queue: Any) -> None:
    mark = make_mark(fields, machine)
    base = _rss_kb("VmRSS")
    decode, check = [], []
    for path in paths:
        t = time.perf_counter()
        with Image.open(path) as image:
            image.convert("L").load()
        decode.append(time.perf_counter() - t)
        t = time.perf_counter()
        v = verify_photo(path, mark.program, spot_mm=0.1, code=mark.code, layout=mark.layout)
        check.append(time.perf_counter() - t)
        if not v.passed:
            print(f"   12 MP photo judged FAIL: {v.detail}")
    queue.put((decode, check, (_rss_kb("VmHWM") - base) / 1024))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=64)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--big", type=int, default=3, help="12-MP photos to time (0: skip)")
    args = parser.parse_args()

    matrix: Counter[tuple[str, str]] = Counter()
    by_kind: Counter[tuple[str, bool]] = Counter()
    wrong: list[str] = []
    seconds: list[float] = []
    for case in cases(args.cases, seed=args.seed):
        m = case.checked
        t = time.perf_counter()
        if case.photo is None:
            v = verify_workpiece(m.program, case.workpiece, spot_mm=0.1, code=m.code, layout=m.layout)
        else:
            v = verify_photo(io.BytesIO(case.photo), m.program, spot_mm=0.1, code=m.code, layout=m.layout)
            seconds.append(time.perf_counter() - t)
        truth = "right record" if case.expect_pass else "wrong record"
        verdict = "accepted" if v.passed else "rejected"
        matrix[truth, verdict] += 1
        by_kind[case.shown.machine, v.passed == case.expect_pass] += 1
        if v.passed != case.expect_pass:
            wrong.append(f"   {case.name}: {v.detail}")
    right_n = matrix["right record", "accepted"] + matrix["right record", "rejected"]
    wrong_n = matrix["wrong record", "accepted"] + matrix["wrong record", "rejected"]
    print(f"labelled set: {args.cases} cases (seed {args.seed}), {len(seconds)} of them photos at 1280x960")
    print(f"{'':16}{'accepted':>10}{'rejected':>10}")
    for truth in ("right record", "wrong record"):
        print(f"{truth:16}{matrix[truth, 'accepted']:>10}{matrix[truth, 'rejected']:>10}")
    print(f"false accept: {matrix['wrong record', 'accepted']} of {wrong_n} (goal 0)")
    fr = matrix["right record", "rejected"]
    print(f"false reject: {fr} of {right_n} = {fr / max(1, right_n):.1%} (goal <= 2 %)")
    for machine in sorted({k for k, _ in by_kind}):
        print(
            f"   {machine:11} correct verdicts {by_kind[machine, True]} of {by_kind[machine, True] + by_kind[machine, False]}"
        )
    print(f"time per 1280x960 photo: median {np.median(seconds):.2f} s, max {max(seconds):.2f} s")
    for line in wrong:
        print(line)

    if args.big:
        fields = (("agency", "UPF"), ("owner_country", "UG"), ("serial", "AK100202"), ("year", "26"))
        mark = make_mark(fields, "laser-dm")
        wp = burn(mark, px_per_mm=40)
        rng = np.random.default_rng(args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i in range(args.big):
                photo, _ = synth_photo(wp.image(), wp.px_per_mm, rng, size=(4000, 3000), jpeg=True)
                path = Path(tmp) / f"big{i}.jpg"
                path.write_bytes(photo)
                paths.append(str(path))
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            child = ctx.Process(target=_big_child, args=(paths, fields, "laser-dm", queue))
            child.start()
            decode, check, peak_mb = queue.get(timeout=600)
            child.join()
        print(f"12 MP JPEG (4000x3000), {args.big} photos: {np.median(check):.2f} s per photo, "
              f"{np.median(check) / np.median(decode):.1f}x the time to decode it ({np.median(decode):.2f} s); "
              f"peak memory +{peak_mb:.0f} MB above the checker's footprint")  # fmt: skip


if __name__ == "__main__":
    main()
