"""Ё and Й, which Hershey's Cyrillic set lacks, composed from Hershey's own strokes (ISSUE 15).

The letter is Hershey's Е or И unchanged; the diacritic is Hershey's breve (from its lower-case й)
or two of Hershey's full stops, in the band the Hershey cell has above the cap line. The glyph stays
inside its box; the height rules measure the letter without its accent. The dot fonts have Greek and
Cyrillic bitmaps of our own, Ё and Й with the accent in rows above the cap line.
"""

from __future__ import annotations

import numpy as np
import pytest

from markctl.errors import LayoutError
from markctl.layouts import MarkRequest, bundled_rules, check, compose, program
from markctl.layouts.checks import _body_extent_mm
from markctl.layouts.fonts import font_names, get_font

from .conftest import request, request_dict

STROKE_FONTS = [f for f in font_names() if f.startswith("hershey:")]
CELL_TOP = 1.0 + 4.0 / 21.0  # the Hershey cell: 4 units (of 21 to the cap height) above the cap line
GAP = 1.5 / 21.0
# A user profile with a height rule at the impression bottom (the bundled EU rule measures the
# nominal font size, where a glyph's extent does not count).
EU_BOTTOM = """schema_version = 1
id = "eu-import-bottom"
extends = "eu-import"
[[height]]
rule = "TEST-BOTTOM"
clause = "a test rule: character height at the impression bottom"
min_mm = 1.8
measured_at = "impression-bottom"
measuring_clause = "test"
"""


@pytest.mark.parametrize("font", STROKE_FONTS)
@pytest.mark.parametrize(("composed", "base"), [("Й", "И"), ("Ё", "Е")])
def test_composed_capital_is_the_hershey_letter_plus_an_accent_inside_the_glyph_box(
    font: str, composed: str, base: str
) -> None:
    f = get_font(font)
    glyph, letter = f.glyph(composed), f.glyph(base)
    # The letter is Hershey's, stroke for stroke; the advance too.
    assert len(glyph.strokes) > len(letter.strokes) and glyph.advance == letter.advance
    for ours, hershey in zip(glyph.strokes, letter.strokes, strict=False):
        assert np.array_equal(ours, hershey)
    accent = np.concatenate(glyph.strokes[len(letter.strokes) :])
    # Inside the glyph box: between the side bearings, under the Hershey cell's top ...
    pts = np.concatenate(glyph.strokes)
    assert pts[:, 0].min() >= 0.0 and pts[:, 0].max() <= glyph.advance
    assert pts[:, 1].min() >= 0.0 and pts[:, 1].max() <= CELL_TOP + 1e-9
    # ... and the accent clear of the letter (above the cap line by more than a stroke's gap).
    assert accent[:, 1].min() >= 1.0 + GAP - 1e-9
    assert (
        glyph.accent_em == pytest.approx(accent[:, 1].max() - 1.0) and 0 < glyph.accent_em <= CELL_TOP - 1.0
    )
    # Centred on the letter.
    xs = np.concatenate(letter.strokes)[:, 0]
    assert (accent[:, 0].min() + accent[:, 0].max()) / 2 == pytest.approx((xs.min() + xs.max()) / 2)


def test_the_breve_is_hersheys_own_and_the_diaeresis_two_hershey_full_stops() -> None:
    f = get_font("hershey:futural")
    breve = f.glyph("Й").strokes[-1]
    assert len(breve) == 9  # the breve of Hershey's lower-case й, point for point (flattened)
    dots = f.glyph("Ё").strokes[-2:]
    stop = f.glyph(".").strokes  # futural's own full stop differs: ours is the Cyrillic set's
    assert all(len(d) == 5 and np.allclose(d[0], d[-1]) for d in dots) and stop  # closed, like Hershey's stop


@pytest.mark.parametrize("font", ["5x7", "7x9"])
@pytest.mark.parametrize(("composed", "base"), [("Й", "И"), ("Ё", "Е")])
def test_dot_font_accents_sit_above_the_full_height_letter(font: str, composed: str, base: str) -> None:
    f = get_font(font)
    glyph, letter = f.glyph(composed), f.glyph(base)
    letter_dots = {tuple(p) for p in np.concatenate(letter.strokes).round(9)}
    dots = {tuple(p) for p in np.concatenate(glyph.strokes).round(9)}
    accent = np.array(sorted(dots - letter_dots))
    assert letter_dots < dots and glyph.advance == letter.advance  # the letter, dot for dot
    # The accent: above the cap line by at least two dot pitches (a blank row between), at most
    # three rows up; accent_em says how far it rises.
    assert accent[:, 1].min() >= 1.0 + 2 * f.pitch_em - 1e-9
    assert (
        glyph.accent_em == pytest.approx(accent[:, 1].max() - 1.0)
        and glyph.accent_em <= 3 * f.pitch_em + 1e-9
    )
    assert accent[:, 0].min() >= 0 and accent[:, 0].max() <= glyph.advance - f.pitch_em  # inside its columns


def test_greek_and_cyrillic_in_a_dot_font_are_marked_by_a_laser_never_sent_to_a_pattern_machine() -> None:
    for serial in ("ЁЙЖ1234", "ΩΨΔ1234"):
        fields = {"maker": "ZASTAVA", "country": "RS", "serial": serial, "year": "2025", "model": "M70"}
        data = request_dict("eu-import", fields=fields)
        data["options"]["font"] = "7x9"
        layout = compose(MarkRequest.parse(data))
        report = check(layout)
        assert report.passed, [f.message for f in report.errors]
        line = next(ln for ln in layout.lines if ln.fields == ("serial",))
        assert line.text == serial and _body_extent_mm(line, layout) == pytest.approx(
            line.height_mm, rel=1e-6
        )
        assert program(layout).dot_count > 0  # the laser burns markctl's own dots
        # A dot-peen pattern controller is sent ASCII and draws its own font: refused before cutting.
        peen = compose(MarkRequest.parse({**data, "machine": "peen-modbus"}))
        with pytest.raises(LayoutError, match="cannot be sent to a pattern machine") as refused:
            program(peen)
        assert refused.value.field == "options.font" and f"field 3 {serial!r}:" in str(refused.value)
    # Latin on the same pattern machine is sent as before.
    latin = request_dict("eu-import", machine="peen-modbus")
    latin["options"]["font"] = "7x9"
    assert program(compose(MarkRequest.parse(latin))).fields


def test_an_eu_serial_with_yo_and_short_i_is_composed_and_passes() -> None:
    req = request("eu-import", fields={"maker": "ЗАСТАВА", "country": "RS", "serial": "ЁЙ123456", "year": "2025",
                                       "model": "M70"})  # fmt: skip
    layout = compose(req)
    report = check(layout)
    assert report.passed, [f.message for f in report.errors]
    assert "ENG-GLYPH" in {f.rule for f in report.findings if f.severity.value == "pass"}  # EU-ALPHA: compose
    serial = next(ln for ln in layout.lines if "serial" in ln.fields)
    assert serial.text == "ЁЙ123456"
    # Every stroke of the block (accents too) is inside the zone the mark was placed in.
    pts = np.concatenate([s for ln in layout.lines for s in ln.strokes()])
    assert pts[:, 1].max() <= 20 and pts[:, 1].min() >= 0 and pts[:, 0].min() >= 0 and pts[:, 0].max() <= 60
    # The accent is not the character's height: measured like the same line with Е and И.
    plain = compose(request("eu-import", fields={"maker": "ЗАСТАВА", "country": "RS", "serial": "ЕИ123456",
                                                 "year": "2025", "model": "M70"}))  # fmt: skip
    plain_serial = next(ln for ln in plain.lines if "serial" in ln.fields)
    assert serial.height_mm == plain_serial.height_mm
    assert _body_extent_mm(serial, layout) == pytest.approx(_body_extent_mm(plain_serial, plain), abs=1e-9)
    # Where the glyph extent decides, an Ё-only line is judged on its Е, not Е plus dots.
    only = compose(request("eu-import", fields={"maker": "ЗАСТАВА", "country": "RS", "serial": "ЁЁЁ", "year": "2025",
                                                "model": "M70"}))  # fmt: skip
    line = next(ln for ln in only.lines if ln.fields == ("serial",))
    assert line.centre_extent_mm > _body_extent_mm(line, only)
    assert _body_extent_mm(line, only) == pytest.approx(line.height_mm, rel=1e-6)


def test_a_height_rule_at_the_impression_bottom_measures_the_letter_not_its_accent() -> None:
    book = bundled_rules().with_texts([("test", EU_BOTTOM)])
    fields = {"maker": "ЗАСТАВА", "country": "RS", "serial": "ЁЁЁ", "year": "2025", "model": "M70"}
    # Set at 1.7 mm: Е's bottom is about 1.75 mm, under the 1.8 mm rule; Е with its dots would be ~2 mm.
    req = request(
        "eu-import",
        profile="eu-import-bottom",
        fields=fields,
        options={"char_height_mm": 1.7, "today": "2026-11-27"},
    )
    findings = [f for f in check(compose(req, book)).findings if f.rule == "TEST-BOTTOM"]
    serial = next(f for f in findings if "'ЁЁЁ'" in f.subject)
    assert serial.severity.value == "error" and 1.7 < float(serial.measured.split()[0]) < 1.8
