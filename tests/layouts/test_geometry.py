"""Geometry properties, fonts, the process model, the Data Matrix round trip and the previews."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from markctl.errors import LayoutError
from markctl.layouts import MarkRequest, bundled_rules, check, compose, render_png, render_svg
from markctl.layouts import _geom as g
from markctl.layouts.datamatrix import decode_datamatrix
from markctl.layouts.fonts import font_names, get_font
from markctl.layouts.materials import get_material, plan_process
from markctl.layouts.request import MarkOptions
from markctl.profiles import load_profile

from .conftest import TODAY, request, request_dict

_TOL = 1e-6


@st.composite
def _requests(draw: st.DrawFn) -> MarkRequest:
    profile = draw(st.sampled_from(["iti-import", "iti-stockpile", "ca-import", "iti-found"]))
    data = request_dict(profile)
    w = draw(st.floats(10, 80))
    h = draw(st.floats(5, 30))
    data["component"]["zone"] = [[0, 0], [w, 0], [w + draw(st.floats(-3, 3)), h], [0, h]]
    kx, ky = draw(st.floats(0, w)), draw(st.floats(0, h))
    data["component"]["keepouts"] = [[[kx, ky], [kx + 3, ky], [kx + 3, ky + 2], [kx, ky + 2]]]
    ex, ey = draw(st.floats(0, w)), draw(st.floats(0, h))
    data["component"]["existing_marks"] = [[[ex, ey], [ex + 8, ey], [ex + 8, ey + 2.5], [ex, ey + 2.5]]]
    data["machine"] = draw(st.sampled_from(["grbl-1.1", "telesis-tmp"]))
    data["options"].update(
        rotation_deg=draw(st.sampled_from([0.0, 90.0, 180.0, 15.0])),
        align=draw(st.sampled_from(["left", "center", "right"])),
        datamatrix=draw(st.booleans()),
        char_height_mm=draw(st.one_of(st.none(), st.floats(1.6, 4.0))),
    )
    return MarkRequest.parse(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_requests())
def test_every_glyph_and_module_lies_inside_the_zone_and_clear_of_obstacles(req: MarkRequest) -> None:
    try:
        layout = compose(req)
    except LayoutError as exc:
        # Does not fit: refused, naming what to change, nothing half-made. A machine whose stored
        # pattern places the fields also refuses a rotation, a height or more fields than it has.
        pattern = ("options.rotation_deg", "fields") if req.machine == "telesis-tmp" else ()
        assert exc.field in ("component.zone", "options.char_height_mm", *pattern)
        return
    rules = layout.rules
    mark = layout.mark_geometry()
    assert g.area(mark.difference(layout.zone)) <= _TOL
    for k in layout.keepouts:
        assert g.area(mark.intersection(k)) <= _TOL
    gap = rules.adjacent.min_gap_mm if rules.adjacent else 0.0
    for e in layout.existing:
        assert g.distance(mark, e) > 0
        assert g.distance(mark, e) >= gap - _TOL  # import-style marks stay visibly distinct
    if layout.code is not None:
        for centre in layout.code.module_centres():
            assert layout.zone.contains(g.points(centre[None, :]))
    for line in layout.lines:
        for rule in rules.height:
            height = layout.process.height_at(rule.measured_at, line.centre_extent_mm, line.height_mm)
            assert height + _TOL >= rule.min_mm
    report = check(layout)
    height_rules = {t.rule for t in rules.height}
    assert not any(f.rule in height_rules and f.subject.startswith("line") for f in report.errors)


def test_height_is_measured_at_the_impression_bottom() -> None:
    layout = compose(request("iti-import", options={"char_height_mm": 1.55, "today": TODAY.isoformat()}))
    p = layout.process
    extent = layout.lines[0].centre_extent_mm
    assert extent == pytest.approx(1.55, abs=1e-6)  # measured on the composed geometry
    top = extent + p.stroke_width_mm
    assert p.bottom_height(extent) == pytest.approx(
        top - 2 * p.depth_mm * math.tan(math.radians(p.wall_angle_deg))
    )
    # The opening at the surface is 1.63 mm wide, but the bottom is under 1.6 mm: the rule fails.
    assert top > 1.6 > p.bottom_height(extent)
    assert "PRAC-HEIGHT" in check(layout).failed_rules


@pytest.mark.parametrize("font", font_names())
def test_every_allowed_character_renders_in_every_font(font: str) -> None:
    f = get_font(font)
    for pid in bundled_rules().ids:
        # Every font draws every allowed capital: Hershey's Ё and Й are composed from Hershey's
        # own strokes, the dot fonts have Greek and Cyrillic of their own (test_composed_capitals.py).
        allowed = bundled_rules().get(pid).charset.allowed
        for ch in allowed:
            shape = f.glyph(ch)
            assert shape.strokes, (font, ch)
            pts = np.concatenate(shape.strokes)
            assert np.isfinite(pts).all()
    with pytest.raises(LayoutError):
        f.glyph("Ӂ")  # Ӂ (Moldovan Cyrillic): in no profile, drawn by no font, never substituted


def test_dot_fonts_span_one_em() -> None:
    for name in ("5x7", "7x9"):
        f = get_font(name)
        for (
            ch
        ) in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ":
            shape = f.glyph(ch)
            ys = np.concatenate(shape.strokes)[:, 1]
            # Ё and Й: the letter spans one em, the accent rises above it (accent_em).
            assert ys.min() == pytest.approx(0) and ys.max() - shape.accent_em == pytest.approx(1), (name, ch)


def test_process_model() -> None:
    grbl, peen = load_profile("grbl-1.1"), load_profile("telesis-tmp")
    steel, hard = get_material("steel"), get_material("hardened-steel")
    opts = MarkOptions()
    laser = plan_process(steel, grbl, opts, min_depth_mm=0.0762, max_depth_mm=0.3)
    assert laser.depth_mm >= 0.0762 and laser.passes > 1
    anneal = plan_process(steel, grbl, MarkOptions(process="anneal"), min_depth_mm=0.0762, max_depth_mm=0.3)
    assert anneal.depth_mm == 0 and not anneal.removes_material
    soft = plan_process(steel, peen, MarkOptions(force_pct=50), min_depth_mm=0.0762, max_depth_mm=0.3)
    harder = plan_process(hard, peen, MarkOptions(force_pct=50), min_depth_mm=0.0762, max_depth_mm=0.3)
    stronger = plan_process(steel, peen, MarkOptions(force_pct=90), min_depth_mm=0.0762, max_depth_mm=0.3)
    assert harder.depth_mm < soft.depth_mm < stronger.depth_mm
    auto = plan_process(steel, peen, opts, min_depth_mm=0.0762, max_depth_mm=0.3)
    assert auto.depth_mm >= 0.0762
    foam = plan_process(
        get_material("glass-filled-polymer"),
        grbl,
        MarkOptions(process="foam"),
        min_depth_mm=0.0762,
        max_depth_mm=0.3,
    )
    assert foam.depth_mm == 0


def test_polymer_ablation_reports_its_modelled_depth() -> None:
    data = request_dict("iti-import")
    data["component"].update(material="glass-filled-polymer", name="frame")
    layout = compose(MarkRequest.parse(data))
    depth = next(f for f in check(layout) if f.subject == "process")
    assert f"{layout.process.depth_mm:.4f} mm" in depth.measured and layout.process.depth_mm > 0


@pytest.mark.parametrize("machine", ["grbl-1.1", "telesis-tmp"])
def test_datamatrix_in_png_decodes_with_another_library(machine: str, tmp_path: Path) -> None:
    # Encoded by pyStrich (layouts.datamatrix), decoded here by zxing-cpp from the rendered PNG.
    data = request_dict("iti-stockpile", machine=machine)
    data["options"].update(datamatrix=True, module_mm=0.4, rotation_deg=0)
    if machine == "telesis-tmp":  # a surface where its stored pattern's fields (5, 19), (5, 14) fall
        data["component"].update(zone=[[0, 0], [60, 0], [60, 25], [0, 25]], existing_marks=[])
    layout = compose(MarkRequest.parse(data))
    report = check(layout)
    assert report.passed
    path = render_png(layout, report.findings, tmp_path / "mark.png", px_per_mm=12)
    with Image.open(path) as image:
        assert decode_datamatrix(image.convert("L")) == ["UG-UPF-0012345"]
    assert layout.code is not None and layout.code.symbol.content == "UG-UPF-0012345"


def test_svg_shows_zone_obstacles_mark_and_highlighted_findings() -> None:
    data = request_dict("iti-import")
    data["component"]["keepouts"] = [[[40, 0], [60, 0], [60, 5], [40, 5]]]
    data["options"]["passes"] = 1  # too shallow: an error finding
    layout = compose(MarkRequest.parse(data))
    report = check(layout)
    svg = render_svg(layout, report.findings)
    assert svg.startswith("<svg") and svg.count('class="zone"') == 1
    assert 'class="keepout"' in svg and 'class="existing"' in svg and "<polyline" in svg
    # A finding with a place is drawn; the depth error has none, so give the check a misplaced one.
    import dataclasses

    moved = dataclasses.replace(layout, existing=(g.rect(*g.bounds(layout.footprint)),))
    svg2 = render_svg(moved, check(moved).findings)
    assert 'class="finding error"' in svg2 and "FP-5-1c" in svg2


def test_materials_table_is_complete() -> None:
    from markctl.layouts.materials import material_names

    names = material_names()
    assert {"steel", "hardened-steel", "aluminium", "glass-filled-polymer", "embedded-steel-plate"} <= set(
        names
    )
    for name in names:
        m = get_material(name)
        assert m.hardness_hv > 0 and 0 <= m.laser_wall_angle_deg < 45
        assert "ablate" in m.laser
        for mode, by_source in m.laser.items():
            assert all(d >= 0 for d in by_source.values())
            if mode in ("anneal", "foam", "carbonise"):  # colour change only: depth 0 (TECH-POLY)
                assert all(d == 0 for d in by_source.values())
    with pytest.raises(LayoutError) as info:
        get_material("cheese")
    assert info.value.field == "component.material"


def test_composing_in_threads_gives_the_sequential_result() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from markctl.layouts import program

    reqs = [
        request("iti-stockpile", fields={**request_dict("iti-stockpile")["fields"], "serial": f"S{i:05d}"})
        for i in range(16)
    ]
    expected = [program(compose(r)).digest for r in reqs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda r: program(compose(r)).digest, reqs))
    assert got == expected
