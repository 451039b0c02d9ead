"""Verification reads the mark back and fails when it says something else than the record."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pytest
import zxingcpp
from PIL import Image

from markctl.layouts.program import MotionProgram, ProcessParams, Stroke, StrokeKind
from markctl.simulator.workpiece import Workpiece
from markctl.verify import (
    PhotoRejectedError,
    compare_masks,
    decode_datamatrix,
    verify_photo,
    verify_workpiece,
)
from markctl.verify.reference import build_reference
from markctl.verify.testset import Mark, burn, cases, make_mark, synth_photo, wrong_fields

SPOT = 0.1
PARAMS = (ProcessParams(speed_mm_min=1500, power_pct=80),)
# "E" and "1" as polylines, 3 mm tall, at (10, 10)
STROKES = (
    Stroke(StrokeKind.LINE, np.array([[12.0, 10.0], [10.0, 10.0], [10.0, 13.0], [12.0, 13.0]])),
    Stroke(StrokeKind.LINE, np.array([[10.0, 11.5], [11.5, 11.5]])),
    Stroke(StrokeKind.LINE, np.array([[14.0, 12.5], [14.5, 13.0], [14.5, 10.0]])),
)
PROGRAM = MotionProgram(STROKES, PARAMS)
FIELDS = {"owner_country": "UG", "agency": "UPF", "serial": "AK100202", "year": "26"}


def _mark(fields: dict[str, str], machine: str = "laser-dm") -> Mark:
    return make_mark(tuple(sorted(fields.items())), machine)


def _burn(program: MotionProgram, wp: Workpiece) -> None:
    for s in program.strokes:
        for (x0, y0), (x1, y1) in zip(s.points[:-1], s.points[1:], strict=True):
            wp.burn_segment(x0, y0, x1, y1, width_mm=SPOT, depth_mm=0.03)


def _check(photo: bytes | Path, mark: Mark, **kw: float) -> dict[str, object]:
    source = photo if isinstance(photo, Path) else io.BytesIO(photo)
    v = verify_photo(source, mark.program, spot_mm=SPOT, code=mark.code, layout=mark.layout, **kw)  # type: ignore[arg-type]
    return v.as_dict()


# --- the simulator's own workpiece ---------------------------------------------------------------


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


def test_datamatrix_is_read_and_compared() -> None:
    code = zxingcpp.create_barcode("GB26-A123", zxingcpp.BarcodeFormat.DataMatrix)
    image = Image.fromarray(np.asarray(code.to_image(scale=6, add_quiet_zones=True)))
    assert decode_datamatrix(image) == "GB26-A123"
    assert decode_datamatrix(Image.new("L", (100, 100), 255)) is None


def test_one_character_apart_is_told_apart_on_the_workpiece() -> None:
    shown = _mark(FIELDS, "laser")
    wp = burn(shown)
    assert verify_workpiece(shown.program, wp, spot_mm=SPOT, layout=shown.layout).passed
    other = _mark(wrong_fields(FIELDS, "digit"), "laser")  # AK100203
    v = verify_workpiece(other.program, wp, spot_mm=SPOT, layout=other.layout)
    assert not v.passed
    assert "line 2 'AK100203', character 8: reads '2', expected '3'" in v.detail
    assert v.mismatches[0]["position"] == 8 and v.text_read[1] == "AK100202"


# --- photos --------------------------------------------------------------------------------------


def test_the_wrong_rifle_fails_and_says_which_character(tmp_path: Path) -> None:
    """The issue's case: the burned image of AK-100203 passed against the record of AK-100202."""
    shown = _mark(wrong_fields(FIELDS, "digit"))  # AK100203 is on the weapon
    photo = tmp_path / "ak100203.png"
    burn(shown).save_png(photo)
    good = _check(photo, shown)
    assert good["passed"], good["detail"]
    bad = _check(photo, _mark(FIELDS))
    assert not bad["passed"]
    assert "character 8: reads '3', expected '2'" in str(bad["detail"])
    assert "Data Matrix reads 'UG-UPF-AK100203', expected 'UG-UPF-AK100202'" in str(bad["detail"])


def test_scale_comes_from_the_photo_and_a_wrong_px_per_mm_is_said(tmp_path: Path) -> None:
    """The simulator's image at 20 px/mm failed at the default 10: now the scale is measured."""
    mark = _mark(FIELDS, "laser")
    photo = tmp_path / "wp.png"
    burn(mark, px_per_mm=20).save_png(photo)
    result = _check(photo, mark, px_per_mm=10)
    assert result["passed"], result["detail"]
    assert abs(float(result["px_per_mm"]) - 20) < 1  # type: ignore[arg-type]
    assert "--px-per-mm 10 does not match the photo, which measures 20.0 px/mm" in str(result["detail"])
    quiet = _check(photo, mark, px_per_mm=20)
    assert quiet["passed"] and "notes" not in quiet


@pytest.mark.parametrize("how", ["letter", "transposed", "maker"])
def test_rotated_perspective_photo_against_a_near_record(how: str) -> None:
    shown = _mark(FIELDS, "laser")
    wp = burn(shown)
    rng = np.random.default_rng(5)
    photo, truth = synth_photo(wp.image(), wp.px_per_mm, rng, size=(960, 720), rotation_deg=13.0, jpeg=True)
    right = _check(photo, shown)
    assert right["passed"], right["detail"]
    assert abs(float(right["px_per_mm"]) - truth["px_per_mm"]) < 0.1 * truth["px_per_mm"]  # type: ignore[arg-type]
    wrong = _check(photo, _mark(wrong_fields(FIELDS, how), "laser"))
    assert not wrong["passed"] and "expected" in str(wrong["detail"])


def test_dot_peen_photo_reports_missing_and_extra_dots() -> None:
    mark = _mark({**FIELDS, "serial": "GB00317"}, "peen")
    wp = burn(mark)
    good = verify_workpiece(mark.program, wp, spot_mm=SPOT, layout=mark.layout)
    assert good.passed and good.dots is not None and good.dots["missing_count"] == 0
    # The same mark with five dots of the "3" never struck and two stray strikes.
    dots = np.concatenate([s.points for s in mark.program.strokes if s.kind is StrokeKind.DOTS])
    ref = build_reference(mark.program, stroke_mm=2 * mark.layout.half_width_mm, layout=mark.layout)
    slot = next(s for s in ref.slots if s.char == "3")
    centre = (slot.origin[0] + 0.3 * slot.height_mm, slot.origin[1] + 0.5 * slot.height_mm)
    near3 = set(np.argsort(np.hypot(dots[:, 0] - centre[0], dots[:, 1] - centre[1]))[:5].tolist())
    faulty = Workpiece(wp.width_mm, wp.height_mm, px_per_mm=wp.px_per_mm, origin=wp.origin)
    for i, (x, y) in enumerate(dots):
        if i not in near3:
            faulty.strike_dot(float(x), float(y), depth_mm=mark.layout.half_width_mm)
    x0, y0, x1, y1 = mark.program.bounds
    for x, y in ((x1 + 1.0, y0), (x0 - 1.0, y1)):
        faulty.strike_dot(x, y, depth_mm=mark.layout.half_width_mm)
    buffer = io.BytesIO()
    faulty.image().save(buffer, format="PNG")
    result = _check(buffer.getvalue(), mark)
    assert not result["passed"]
    dots_found = result["dots"]
    assert isinstance(dots_found, dict)
    assert dots_found["missing_count"] >= 5 and dots_found["extra_count"] == 2, dots_found
    assert "dots missing" in str(result["detail"]) and "2 extra dots" in str(result["detail"])


def test_a_small_labelled_set_has_no_false_accept() -> None:
    """A slice of the bench's set (bench/verify.py runs all of it): every verdict as labelled."""
    wrong = []
    for case in cases(4, seed=3, size=(1024, 768)):
        m = case.checked
        if case.photo is None:
            v = verify_workpiece(m.program, case.workpiece, spot_mm=SPOT, code=m.code, layout=m.layout)
        else:
            v = verify_photo(io.BytesIO(case.photo), m.program, spot_mm=SPOT, code=m.code, layout=m.layout)
        if v.passed != case.expect_pass:
            wrong.append((case.name, v.detail))
    assert not wrong


# --- untrusted photos ----------------------------------------------------------------------------


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)


def test_a_decompression_bomb_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real bomb, scaled down with the limit: 3000 x 3000 zeros compress to ~9 kB and would decode
    # to 9 MB, against a 1-megapixel limit (a 20000 x 20000 one is 400 MB against the default 40).
    monkeypatch.setenv("MARKCTL_PHOTO_MAX_PIXELS", "1000000")
    packer = zlib.compressobj(9)
    row = b"\x00" + bytes(3000)
    idat = b"".join(packer.compress(row) for _ in range(3000)) + packer.flush()
    assert len(idat) < 20_000
    data = _png_header(3000, 3000)
    data += len(idat).to_bytes(4, "big") + b"IDAT" + idat + zlib.crc32(b"IDAT" + idat).to_bytes(4, "big")
    with pytest.raises(
        PhotoRejectedError, match="3000x3000 pixels: 9 megapixels, more than the 1 allowed"
    ) as caught:
        verify_photo(io.BytesIO(data), PROGRAM, spot_mm=SPOT)
    assert caught.value.too_large


def test_a_header_claiming_a_huge_image_and_a_truncated_png_are_refused() -> None:
    claim = _png_header(60000, 60000) + (100).to_bytes(4, "big") + b"IDAT" + bytes(100)
    with pytest.raises(PhotoRejectedError, match="3600 megapixels, more than the 40 allowed") as caught:
        verify_photo(io.BytesIO(claim), PROGRAM, spot_mm=SPOT)
    assert caught.value.too_large
    whole = io.BytesIO()
    Image.new("L", (400, 300), 200).save(whole, format="PNG")
    with pytest.raises(PhotoRejectedError, match="truncated or corrupt|cannot be read") as caught:
        verify_photo(io.BytesIO(whole.getvalue()[:-40]), PROGRAM, spot_mm=SPOT)
    assert not caught.value.too_large
    with pytest.raises(PhotoRejectedError, match="not a PNG or JPEG"):
        verify_photo(io.BytesIO(b"hello, this is text" * 10), PROGRAM, spot_mm=SPOT)


def test_the_byte_limit_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    photo = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)).save(photo)
    monkeypatch.setenv("MARKCTL_PHOTO_MAX_BYTES", "1000")
    with pytest.raises(PhotoRejectedError, match="MARKCTL_PHOTO_MAX_BYTES") as caught:
        verify_photo(photo, PROGRAM, spot_mm=SPOT)
    assert caught.value.too_large
