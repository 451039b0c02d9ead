"""Verification of an applied mark: does what was cut say what was recorded, and nothing else?

A verification that cannot tell ``AK-100202`` from ``AK-100203`` is worse than none, so the mark is
*read back*, not just compared as a blob of pixels:

* **characters**: at every character position of the recorded layout, each glyph of the font the
  layout used is drawn and compared with the image (:mod:`markctl.verify.reference`); the glyph
  that fits best is what the mark says. One character off fails and names the line, the position
  and both characters.
* **ink**: coverage (share of the expected mark found) and spill (share of the marks found that lie
  outside the layout: an extra character, a burn during a travel move).
* **dots**: for dot-peen programs, each dot is found or reported missing; dots the program does not
  have are reported as extra.
* **2D code**: the Data Matrix is decoded (zxing-cpp) and its content compared with the recorded one.

A photo is first registered onto the expected mark from the image itself
(:mod:`markctl.verify.register`: the Data Matrix's corners, feature matching or moments, then a
homography refined by correlation), so its scale, rotation, position and perspective need not be
known. A ``px_per_mm`` given by the user is checked against the measured scale and a wrong value
is reported; the measured scale is what is used. A simulated workpiece needs no registration: its
frame is known exactly.

Photos are untrusted input: :mod:`markctl.verify.photo` bounds their bytes, pixels and how many
are checked at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
from PIL import Image

from markctl.layouts.compose import Layout
from markctl.layouts.datamatrix import decode_datamatrix as read_datamatrix
from markctl.layouts.program import MotionProgram, ProcessParams, Program, StrokeKind
from markctl.layouts.toolpath import composed_strokes
from markctl.simulator.workpiece import Workpiece
from markctl.verify.photo import PhotoRejectedError, image_slot, open_photo
from markctl.verify.reference import MIN_GLYPH_SCORE, CharReading, DotReport, Reference, build_reference
from markctl.verify.register import MIN_REGISTRATION, decode_code, register

__all__ = [
    "PhotoRejectedError",
    "Verification",
    "compare_masks",
    "decode_datamatrix",
    "expected_mask",
    "expected_program",
    "verify_extent",
    "verify_photo",
    "verify_workpiece",
]

Mask = npt.NDArray[np.bool_]
F32 = npt.NDArray[np.float32]

MIN_COVERAGE = 0.9
MAX_SPILL = 0.02
# A photo is noisier than the simulator's exact height map: a little more slack on ink alone (the
# characters are judged one by one regardless).
PHOTO_MIN_COVERAGE = 0.8
PHOTO_MAX_SPILL = 0.05
# Placeholder process for strokes a pattern machine draws itself (only their geometry is compared).
_PATTERN_PARAMS = ProcessParams(speed_mm_min=1000.0, force_pct=50.0)
# A --px-per-mm more than this far from the measured scale is reported as wrong.
SCALE_TOLERANCE = 0.15


@dataclass(frozen=True, slots=True)
class Verification:
    coverage: float
    spill: float
    code_expected: str | None
    code_read: str | None
    passed: bool
    detail: str
    text_expected: tuple[str, ...] = ()
    text_read: tuple[str, ...] = ()
    mismatches: tuple[dict[str, Any], ...] = ()
    dots: dict[str, Any] | None = None
    px_per_mm: float | None = None  # measured scale of the photo
    registration: dict[str, Any] | None = None
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        # Plain Python types: the result goes into a JSON record (numpy scalars would not).
        out: dict[str, object] = {
            "coverage": round(float(self.coverage), 4),
            "spill": round(float(self.spill), 4),
            "code_expected": self.code_expected,
            "code_read": self.code_read,
            "passed": bool(self.passed),
            "detail": str(self.detail),
        }
        if self.text_expected:
            out["text_expected"] = list(self.text_expected)
            out["text_read"] = list(self.text_read)
            out["mismatches"] = [dict(m) for m in self.mismatches]
        if self.dots is not None:
            out["dots"] = self.dots
        if self.px_per_mm is not None:
            out["px_per_mm"] = round(float(self.px_per_mm), 2)
        if self.registration is not None:
            out["registration"] = self.registration
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def expected_mask(
    program: MotionProgram, like: Workpiece, *, spot_mm: float, dot_depth_mm: float = 0.1
) -> Mask:
    """The pixels ``program`` should mark on a plate shaped like ``like``."""
    canvas = Workpiece(like.width_mm, like.height_mm, px_per_mm=like.px_per_mm, origin=like.origin)
    for stroke in program.strokes:
        pts = stroke.points
        if stroke.kind is StrokeKind.DOTS:
            for x, y in pts:
                canvas.strike_dot(float(x), float(y), depth_mm=dot_depth_mm)
        else:
            for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
                canvas.burn_segment(
                    float(x0), float(y0), float(x1), float(y1), width_mm=spot_mm, depth_mm=0.01
                )
    return canvas.marked()


def _dilate(mask: Mask, radius: int) -> Mask:
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx == 0 and dy == 0:
                continue
            src = mask[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
            out[max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)] |= src
    return out


def compare_masks(expected: Mask, marked: Mask, *, tolerance_px: int = 2) -> tuple[float, float]:
    """(coverage, spill) of ``marked`` against ``expected`` with a tolerance in pixels."""
    if expected.shape != marked.shape:
        raise ValueError(f"mask shapes differ: {expected.shape} vs {marked.shape}")
    n_expected, n_marked = int(expected.sum()), int(marked.sum())
    coverage = (
        1.0 if n_expected == 0 else float((expected & _dilate(marked, tolerance_px)).sum()) / n_expected
    )
    spill = 0.0 if n_marked == 0 else float((marked & ~_dilate(expected, tolerance_px)).sum()) / n_marked
    return coverage, spill


def decode_datamatrix(image: Image.Image) -> str | None:
    """Text of the first Data Matrix found in ``image``, or None (the layouts' decoder, zxing-cpp)."""
    found = read_datamatrix(image.convert("L"))
    return found[0] if found else None


def _code_image(workpiece: Workpiece) -> Image.Image:
    # Scanners want dark modules on a light field with a margin; upscale small symbols.
    image = workpiece.image()
    if image.width < 600:
        image = image.resize((image.width * 2, image.height * 2), Image.Resampling.NEAREST)
    return image


# --- judging -------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return "'" + text.replace("'", "\\'") + "'"


def _glyph_problems(
    ref: Reference, readings: list[CharReading]
) -> tuple[list[str], list[dict[str, Any]], tuple[str, ...]]:
    lines: dict[int, list[str]] = {}
    for slot in ref.slots:
        lines.setdefault(slot.line, []).append(slot.char)
    read = {n: list(chars) for n, chars in lines.items()}
    mismatches: list[dict[str, Any]] = []
    for r in readings:
        read[r.slot.line][r.slot.index] = r.read if not r.ok else r.slot.char
        if r.ok:
            continue
        legible = r.best_score >= MIN_GLYPH_SCORE
        mismatches.append(
            {
                "line": r.slot.line + 1,
                "position": r.slot.index + 1,
                "expected": r.slot.char,
                "read": r.read if legible else None,
                "score": round(r.score, 3),
                "best_score": round(r.best_score, 3),
            }
        )
    problems = []
    for m in mismatches[:3]:
        text = "".join(lines[m["line"] - 1])
        where = f"line {m['line']} {_quote(text)}, character {m['position']}"
        if m["read"] is None or m["read"] == m["expected"]:
            problems.append(f"{where} ({_quote(m['expected'])}) is not legible")
        else:
            problems.append(f"{where}: reads {_quote(m['read'])}, expected {_quote(m['expected'])}")
    if len(mismatches) > 3:
        problems.append(f"{len(mismatches) - 3} more characters differ")
    return problems, mismatches, tuple("".join(read[n]) for n in sorted(read))


def _dot_problems(report: DotReport) -> tuple[list[str], dict[str, Any] | None]:
    if report.total == 0:
        return [], None
    problems = []
    # A dot or two lost in a photo's glare does not change a character (the glyphs are judged on
    # their own); more than 1 % of the dots, or any dot where none belongs, fails.
    if len(report.missing) > max(1, report.total // 100):
        x, y = report.missing[0]
        problems.append(
            f"{len(report.missing)} of {report.total} dots missing (first at X{x:.2f} Y{y:.2f} mm)"
        )
    if report.extra:
        x, y = report.extra[0]
        problems.append(f"{len(report.extra)} extra dots (first at X{x:.2f} Y{y:.2f} mm)")
    summary = {
        "total": report.total,
        "missing": [[round(x, 2), round(y, 2)] for x, y in report.missing[:50]],
        "extra": [[round(x, 2), round(y, 2)] for x, y in report.extra[:50]],
        "missing_count": len(report.missing),
        "extra_count": len(report.extra),
    }
    return problems, summary


def _judge(
    ref: Reference,
    dark: F32,
    *,
    coverage: float,
    spill: float,
    min_coverage: float,
    max_spill: float,
    code: str | None,
    read: str | None,
    notes: list[str],
    **extra: Any,
) -> Verification:
    problems: list[str] = []
    glyph_problems, mismatches, text_read = _glyph_problems(ref, ref.read_glyphs(dark))
    problems += glyph_problems
    if coverage < min_coverage:
        problems.append(f"only {coverage:.1%} of the mark was cut (need {min_coverage:.0%})")
    if spill > max_spill:
        problems.append(f"{spill:.1%} of the marked area lies outside the layout (allowed {max_spill:.0%})")
    dot_problems, dots = _dot_problems(ref.dot_report(dark))
    problems += dot_problems
    if code is not None and read != code:
        problems.append(
            f"Data Matrix reads {read!r}, expected {code!r}" if read is not None
            else f"Data Matrix not found or not readable (expected {code!r})"
        )  # fmt: skip
    expected_text = tuple(text_read_expected(ref))
    detail = "; ".join(problems) or "matches the layout" + (
        f" ({' / '.join(expected_text)})" if expected_text else ""
    )
    if notes:
        detail += "; note: " + "; ".join(notes)
    return Verification(
        coverage, spill, code, read, not problems, detail,
        text_expected=expected_text, text_read=text_read if expected_text else (),
        mismatches=tuple(mismatches), dots=dots, notes=tuple(notes), **extra,
    )  # fmt: skip


def text_read_expected(ref: Reference) -> list[str]:
    lines: dict[int, list[str]] = {}
    for slot in ref.slots:
        lines.setdefault(slot.line, []).append(slot.char)
    return ["".join(lines[n]) for n in sorted(lines)]


def expected_program(layout: Layout, program: Program) -> MotionProgram:
    """The strokes to expect in the image: the program itself, or for a pattern machine (which owns
    its motion and fonts) the dots and strokes the layout places, in the machine frame."""
    if isinstance(program, MotionProgram):
        return program
    strokes = composed_strokes(layout, layout.request.options.origin_mm)
    return MotionProgram(tuple(strokes), (_PATTERN_PARAMS, _PATTERN_PARAMS))


# --- entry points ------------------------------------------------------------------------------


def verify_workpiece(
    program: MotionProgram,
    workpiece: Workpiece,
    *,
    spot_mm: float,
    code: str | None = None,
    layout: Layout | None = None,
    dot_mm: float | None = None,
) -> Verification:
    """Compare a simulated workpiece with the program that was sent to it (its frame is known).

    ``dot_mm``: the diameter of the dents the machine made, when it is known and is not the
    layout's (a pattern machine strikes with its own force): dots are then judged at that size.
    """
    read = decode_datamatrix(_code_image(workpiece)) if code is not None else None
    stroke = dot_mm if dot_mm is not None else _stroke_mm(program, spot_mm, layout)
    ref = build_reference(program, stroke_mm=stroke, layout=layout, px_per_mm=workpiece.px_per_mm)
    gray = np.asarray(workpiece.image(), dtype=np.float32) / np.float32(255.0)
    dark = 1.0 - gray / max(float(np.median(gray)), 1e-3)
    dark = np.clip(dark / max(float(dark.max()), 1e-3), 0.0, 1.0).astype(np.float32)
    # Reference pixel -> workpiece pixel: both are machine mm at the same scale, offset only.
    shift = (
        round((workpiece.origin[1] + workpiece.height_mm - ref.y1) * workpiece.px_per_mm),
        round((ref.x0 - workpiece.origin[0]) * workpiece.px_per_mm),
    )
    registered = _shifted(dark, ref.shape, shift)
    marked = _shifted(workpiece.marked().astype(np.float32), ref.shape, shift) > 0.5
    outside = int(workpiece.marked().sum()) - int(marked.sum())  # marks beyond the reference frame
    coverage, spill = compare_masks(ref.ink > 0.25, marked)
    if outside > 0:
        spill = (spill * int(marked.sum()) + outside) / max(1, int(marked.sum()) + outside)
    return _judge(ref, registered, coverage=coverage, spill=spill, min_coverage=MIN_COVERAGE,
                  max_spill=MAX_SPILL, code=code, read=read, notes=[])  # fmt: skip


def _shifted(image: F32, shape: tuple[int, int], shift: tuple[int, int]) -> F32:
    """The ``shape`` window of ``image`` starting at row, column ``shift`` (zeros outside it)."""
    rows, cols = shape
    out = np.zeros((rows, cols), dtype=np.float32)
    src_r0, src_c0 = shift
    r0, c0 = max(0, -src_r0), max(0, -src_c0)
    r1, c1 = min(rows, image.shape[0] - src_r0), min(cols, image.shape[1] - src_c0)
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = image[src_r0 + r0 : src_r0 + r1, src_c0 + c0 : src_c0 + c1]
    return out


def _stroke_mm(program: MotionProgram, spot_mm: float, layout: Layout | None) -> float:
    if layout is not None:
        return 2 * layout.half_width_mm
    return spot_mm


def verify_photo(
    photo: str | Path | BinaryIO,
    program: MotionProgram,
    *,
    spot_mm: float,
    code: str | None = None,
    px_per_mm: float | None = None,
    layout: Layout | None = None,
) -> Verification:
    """Read a photo of a real mark back and compare it with its program (and layout, when given).

    Raises:
        PhotoRejectedError: the photo is too large, not a PNG/JPEG, truncated or corrupt.
    """
    with image_slot():
        loaded = open_photo(photo)
        ref = build_reference(program, stroke_mm=_stroke_mm(program, spot_mm, layout), layout=layout)
        found = decode_code(loaded.gray) if ref.code_corners_mm is not None or code is not None else None
        registration = register(loaded.gray, ref, code_corners=found[1] if found else None)
        if registration is None or registration.score < MIN_REGISTRATION:
            score = registration.score if registration is not None else 0.0
            return Verification(
                0.0, 0.0, code, found[0] if found else None, False,
                f"the mark was not found in the photo (match {score:.2f}): photograph the whole mark "
                "square-on, in focus and evenly lit",
                registration={"method": registration.method if registration else None, "score": round(score, 3)},
            )  # fmt: skip
        measured = ref.px_per_mm * registration.photo_px_per_ref_px(ref) / loaded.scale
        notes = []
        if px_per_mm is not None and abs(px_per_mm - measured) > SCALE_TOLERANCE * measured:
            notes.append(
                f"--px-per-mm {px_per_mm:g} does not match the photo, which measures {measured:.1f} px/mm "
                "(the measured scale was used)"
            )
        read = found[0] if found else None
        if code is not None and read is None:
            rectified = np.clip(255.0 * (1.0 - registration.dark), 0, 255).astype(np.uint8)
            image = Image.fromarray(rectified)
            if image.width < 800:
                image = image.resize((image.width * 2, image.height * 2), Image.Resampling.BICUBIC)
            read = decode_datamatrix(image)
        ink = ref.ink_report(registration.dark, tolerance_px=max(2.0, ref.stroke_px))
        return _judge(
            ref, registration.dark, coverage=ink.coverage, spill=ink.spill,
            min_coverage=PHOTO_MIN_COVERAGE, max_spill=PHOTO_MAX_SPILL, code=code, read=read, notes=notes,
            px_per_mm=measured,
            registration={"method": registration.method, "score": round(registration.score, 3)},
        )  # fmt: skip


def verify_extent(
    expected_mm: tuple[float, float, float, float], workpiece: Workpiece, *, tolerance_mm: float
) -> Verification:
    """Pattern machines draw text with their own fonts: check that the marks landed where the layout
    put the text block (machine frame), within ``tolerance_mm`` on every side."""
    found = workpiece.marked_bbox_mm()
    if found is None:
        return Verification(0.0, 0.0, None, None, False, "nothing was marked")
    ex0, ey0, ex1, ey1 = expected_mm
    fx0, fy0, fx1, fy1 = found
    off = max(abs(fx0 - ex0), abs(fy0 - ey0), abs(fx1 - ex1), abs(fy1 - ey1))
    inter_w = max(0.0, min(ex1, fx1) - max(ex0, fx0))
    inter_h = max(0.0, min(ey1, fy1) - max(ey0, fy0))
    coverage = (inter_w * inter_h) / max(1e-9, (ex1 - ex0) * (ey1 - ey0))
    spill = 1.0 - (inter_w * inter_h) / max(1e-9, (fx1 - fx0) * (fy1 - fy0))
    passed = off <= tolerance_mm
    detail = (
        f"marks within {off:.2f} mm of the layout's text block"
        if passed
        else f"marks lie {off:.2f} mm from the layout's text block (tolerance {tolerance_mm:g} mm)"
    )
    return Verification(coverage, spill, None, None, passed, detail)
