"""Verification compares what was cut with what was meant, and fails when they differ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zxingcpp
from PIL import Image

from markctl.layouts.program import MotionProgram, ProcessParams, Stroke, StrokeKind
from markctl.simulator.workpiece import Workpiece
from markctl.verify import compare_masks, decode_datamatrix, verify_photo, verify_workpiece

SPOT = 0.1
PARAMS = (ProcessParams(speed_mm_min=1500, power_pct=80),)
# "E" and "1" as polylines, 3 mm tall, at (10, 10)
STROKES = (
    Stroke(StrokeKind.LINE, np.array([[12.0, 10.0], [10.0, 10.0], [10.0, 13.0], [12.0, 13.0]])),
    Stroke(StrokeKind.LINE, np.array([[10.0, 11.5], [11.5, 11.5]])),
    Stroke(StrokeKind.LINE, np.array([[14.0, 12.5], [14.5, 13.0], [14.5, 10.0]])),
)
PROGRAM = MotionProgram(STROKES, PARAMS)


def _burn(program: MotionProgram, wp: Workpiece) -> None:
    for s in program.strokes:
        for (x0, y0), (x1, y1) in zip(s.points[:-1], s.points[1:], strict=True):
            wp.burn_segment(x0, y0, x1, y1, width_mm=SPOT, depth_mm=0.03)


def test_faithful_burn_passes() -> None:
    wp = Workpiece(30, 20, px_per_mm=20)
    _burn(PROGRAM, wp)
    v = verify_workpiece(PROGRAM, wp, spot_mm=SPOT)
    assert v.passed and v.coverage > 0.99 and v.spill == 0.0


def test_missing_stroke_fails_on_coverage() -> None:
    wp = Workpiece(30, 20, px_per_mm=20)
    _burn(MotionProgram(STROKES[:1], PARAMS), wp)
    v = verify_workpiece(PROGRAM, wp, spot_mm=SPOT)
    assert not v.passed and v.coverage < 0.9 and "was cut" in v.detail


def test_burn_during_travel_fails_on_spill() -> None:
    wp = Workpiece(30, 20, px_per_mm=20)
    _burn(PROGRAM, wp)
    wp.burn_segment(12, 13, 14.5, 10, width_mm=SPOT, depth_mm=0.03)  # the G0 between strokes, fired
    v = verify_workpiece(PROGRAM, wp, spot_mm=SPOT)
    assert not v.passed and v.spill > 0.02 and "outside the layout" in v.detail


def test_compare_masks_tolerance() -> None:
    expected = np.zeros((20, 20), dtype=bool)
    expected[10, 5:15] = True
    shifted = np.roll(expected, 1, axis=0)
    assert compare_masks(expected, shifted, tolerance_px=1) == (1.0, 0.0)
    coverage, spill = compare_masks(expected, shifted, tolerance_px=0)
    assert coverage == 0.0 and spill == 1.0


def test_photo_is_registered_and_checked(tmp_path: Path) -> None:
    wp = Workpiece(30, 20, px_per_mm=20)
    _burn(PROGRAM, wp)
    photo = tmp_path / "photo.png"
    wp.image().save(photo)
    assert verify_photo(photo, PROGRAM, spot_mm=SPOT, px_per_mm=20).passed
    other = Workpiece(30, 20, px_per_mm=20)
    _burn(MotionProgram(STROKES[:1], PARAMS), other)  # an "E" alone is not "E1"
    other.image().save(photo)
    assert not verify_photo(photo, PROGRAM, spot_mm=SPOT, px_per_mm=20).passed


def test_datamatrix_is_read_and_compared() -> None:
    code = zxingcpp.create_barcode("GB26-A123", zxingcpp.BarcodeFormat.DataMatrix)
    image = Image.fromarray(np.asarray(code.to_image(scale=6, add_quiet_zones=True)))
    assert decode_datamatrix(image) == "GB26-A123"
    assert decode_datamatrix(Image.new("L", (100, 100), 255)) is None
