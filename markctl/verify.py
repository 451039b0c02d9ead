"""Verification of an applied mark: does what was cut match what was meant?

Two checks, on a simulated workpiece or on a photo of a real mark:

* **geometry**: the program is drawn into an empty height map of the same size and resolution
  (the same :class:`~markctl.simulator.workpiece.Workpiece` model the simulator cuts into), and the
  two masks are compared with a small pixel tolerance. ``coverage`` is the share of expected pixels
  that were marked; ``spill`` the share of marked pixels that were not expected (a burn during a
  G0 move or while framing shows up here).
* **2D code**: a Data Matrix in the image is decoded (zxing-cpp) and compared with the content the
  layout put in it.

A photo has no known scale or offset, so it is registered by the bounding box of its dark pixels
against the expected mask's, after a global (Otsu) threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from PIL import Image

from markctl.layouts.datamatrix import decode_datamatrix as read_datamatrix
from markctl.layouts.program import MotionProgram, StrokeKind
from markctl.simulator.workpiece import Workpiece

__all__ = [
    "Verification",
    "compare_masks",
    "decode_datamatrix",
    "expected_mask",
    "verify_photo",
    "verify_workpiece",
]

Mask = npt.NDArray[np.bool_]

MIN_COVERAGE = 0.9
MAX_SPILL = 0.02


@dataclass(frozen=True, slots=True)
class Verification:
    coverage: float
    spill: float
    code_expected: str | None
    code_read: str | None
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        # Plain Python types: the result goes into a JSON record (numpy scalars would not).
        return {
            "coverage": round(float(self.coverage), 4),
            "spill": round(float(self.spill), 4),
            "code_expected": self.code_expected,
            "code_read": self.code_read,
            "passed": bool(self.passed),
            "detail": str(self.detail),
        }


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


def _verdict(coverage: float, spill: float, expected: str | None, read: str | None) -> tuple[bool, str]:
    problems = []
    if coverage < MIN_COVERAGE:
        problems.append(f"only {coverage:.1%} of the mark was cut (need {MIN_COVERAGE:.0%})")
    if spill > MAX_SPILL:
        problems.append(f"{spill:.1%} of the marked area lies outside the layout (allowed {MAX_SPILL:.0%})")
    if expected is not None and read != expected:
        problems.append(f"Data Matrix reads {read!r}, expected {expected!r}")
    return (not problems, "; ".join(problems) or "matches the layout")


def verify_workpiece(
    program: MotionProgram, workpiece: Workpiece, *, spot_mm: float, code: str | None = None
) -> Verification:
    """Compare a simulated workpiece with the program that was sent to it."""
    expected = expected_mask(program, workpiece, spot_mm=spot_mm)
    coverage, spill = compare_masks(expected, workpiece.marked())
    read = decode_datamatrix(_code_image(workpiece)) if code is not None else None
    passed, detail = _verdict(coverage, spill, code, read)
    return Verification(coverage, spill, code, read, passed, detail)


def _otsu(gray: npt.NDArray[np.uint8]) -> int:
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    weights = np.cumsum(hist)
    means = np.cumsum(hist * np.arange(256))
    between = (means[-1] * weights - means * total) ** 2 / np.maximum(weights * (total - weights), 1e-9)
    return int(np.argmax(between))


def _bbox(mask: Mask) -> tuple[int, int, int, int] | None:
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def verify_photo(
    photo: str | Path | BinaryIO,
    program: MotionProgram,
    *,
    spot_mm: float,
    code: str | None = None,
    px_per_mm: float = 10.0,
) -> Verification:
    """Compare a photo of a real mark with its program, registering by the marks' bounding boxes."""
    image = Image.open(photo).convert("L")
    gray = np.asarray(image, dtype=np.uint8)
    marked = gray <= _otsu(gray)  # Otsu: class 0 is every value up to and including t
    x0, y0, x1, y1 = program.bounds
    pad = 2.0
    plate = Workpiece(x1 - x0 + 2 * pad, y1 - y0 + 2 * pad, px_per_mm=px_per_mm, origin=(x0 - pad, y0 - pad))
    expected = expected_mask(program, plate, spot_mm=spot_mm)
    eb, mb = _bbox(expected), _bbox(marked)
    if eb is None or mb is None:
        return Verification(0.0, 1.0 if mb else 0.0, code, None, False, "no mark found in the photo")
    crop = Image.fromarray(marked[mb[0] : mb[1], mb[2] : mb[3]].astype(np.uint8) * 255)
    crop = crop.resize((eb[3] - eb[2], eb[1] - eb[0]), Image.Resampling.NEAREST)
    registered = np.zeros_like(expected)
    registered[eb[0] : eb[1], eb[2] : eb[3]] = np.asarray(crop) > 127
    coverage, spill = compare_masks(expected, registered, tolerance_px=3)
    read = decode_datamatrix(image) if code is not None else None
    passed, detail = _verdict(coverage, spill, code, read)
    return Verification(coverage, spill, code, read, passed, detail)


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
