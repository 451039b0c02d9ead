"""Each numeric limit judged at its own measuring point, with the boundary on each side, for every profile.

Heights: 27 CFR 478.92 measures at the impression bottoms, SOR/2004-275 s.4(2) is read at the
surface, EU 2019/68 words a font size; depth, Data Matrix module, adjacency gap and wall share are
measured the same way everywhere. Also the two wrong verdicts of issue 15 (Canadian dot-peen mark,
two-digit EU year of manufacture).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from markctl.layouts import Layout, MarkRequest, bundled_rules, check, compose
from markctl.layouts import _geom as g
from markctl.layouts.checks import exemption_report
from markctl.layouts.content import validate_content
from markctl.layouts.findings import Finding
from markctl.layouts.materials import get_material
from markctl.layouts.rules import Severity
from markctl.profiles import FirmwareProfile, load_profile

from .conftest import EXAMPLES, TODAY, failing, request, request_dict

BOOK = bundled_rules()
PROFILES = sorted(EXAMPLES)
# Far enough from the limit to be beyond round-off, close enough to be a boundary.
DELTA = 0.002


def _light_stylus() -> FirmwareProfile:
    """peen-modbus with a light stylus (the maker's figure 0.15 mm at 75 % in mild steel), so the
    shallow depths at the rules' limits lie inside its force range."""
    profile = load_profile("peen-modbus")
    assert profile.dot_peen is not None
    peen = profile.dot_peen.model_copy(update={"depth_ref_mm": 0.15})
    return profile.model_copy(update={"dot_peen": peen})


LIGHT = _light_stylus()


def _peen_force_pct(depth_mm: float, material: str = "steel") -> float:
    """The force setting of the light stylus that indents ``depth_mm`` (the profile's depth model)."""
    assert LIGHT.dot_peen is not None
    force_pct = LIGHT.dot_peen.force_pct_for(depth_mm, get_material(material).hardness_hv)
    assert 0 <= force_pct <= 100
    return force_pct


def _compose(profile: str, machine: str = "grbl-1.1", **options: Any) -> Layout:
    data = request_dict(profile, machine=machine)
    data["options"].update(options)
    return compose(MarkRequest.parse(data), machine=LIGHT if machine == "peen-modbus" else None)


def _findings(layout: Layout, rule: str, subject_prefix: str = "") -> list[Finding]:
    return [f for f in check(layout).findings if f.rule == rule and f.subject.startswith(subject_prefix)]


# --- the two wrong verdicts ------------------------------------------------------------------


def test_canadian_dot_peen_mark_1_59_mm_at_the_surface_passes() -> None:
    # 1.39 mm between dot centres, dots 0.2 mm wide (0.10 mm deep, 90-degree cone): 1.59 mm at the
    # surface. SOR/2004-275 s.4(2) asks "at least 1.58 mm" and says nothing of impression bottoms.
    layout = _compose(
        "ca-import", "peen-modbus", font="5x7", char_height_mm=1.39, force_pct=_peen_force_pct(0.10)
    )
    assert layout.process.depth_mm == pytest.approx(0.10, abs=1e-6)
    assert layout.process.stroke_width_mm == pytest.approx(0.20, abs=1e-6)
    (height,) = _findings(layout, "CA-PHYS", "line")
    assert height.severity is Severity.PASS
    assert height.measured == "1.590 mm at the surface opening"
    assert "s.4(2)" in height.clause and "surface" in height.clause
    assert check(layout).passed
    # The old reading (impression bottom for every profile) would have failed it.
    assert layout.process.bottom_height(layout.lines[0].centre_extent_mm) < 1.58


def test_us_serial_is_still_measured_at_the_impression_bottom() -> None:
    layout = _compose(
        "us-import", "peen-modbus", font="5x7", char_height_mm=1.5, force_pct=_peen_force_pct(0.1)
    )
    (serial,) = _findings(layout, "US-SIZE", "line")
    assert serial.severity is Severity.ERROR and "impression bottom" in serial.measured
    assert "impression bottoms" in serial.clause


@pytest.mark.parametrize("year", ["99", "1999", "27", "1927"])
def test_eu_import_year_of_manufacture_may_be_last_century(year: str) -> None:
    # eu-import's year is the year of manufacture (Dir 2021/555 art 4): a 1999 pistol imported now.
    assert failing(request("eu-import", fields={**EXAMPLES["eu-import"], "year": year})) == (set(), set())


def test_two_digit_import_year_resolves_to_this_century() -> None:
    errors, _ = failing(request("iti-import", fields={**EXAMPLES["iti-import"], "import_year": "99"}))
    assert errors == {"ITI-8b"}  # 2099: in the future
    _, warnings = failing(request("ca-import", fields={**EXAMPLES["ca-import"], "import_year": "24"}))
    assert warnings == {"CA-CONT"}  # 2024: more than a year ago, check it
    layout = compose(request("iti-import", fields={**EXAMPLES["iti-import"], "import_year": "24"}))
    (year,) = [f for f in check(layout).findings if f.subject == "fields.import_year"]
    assert "year of import 2024" in year.measured


def test_every_bundled_year_field_states_its_meaning() -> None:
    for pid in BOOK.ids:
        for name, spec in BOOK.get(pid).fields.items():
            assert (spec.year_of is None) == (spec.kind.value != "year"), (pid, name)


# --- boundaries of every numeric limit, every profile ----------------------------------------

HEIGHT_CASES = [
    (p, i, m) for p in PROFILES for i in range(len(BOOK.get(p).height)) for m in ("grbl-1.1", "peen-modbus")
]


@pytest.mark.parametrize(("profile", "index", "machine"), HEIGHT_CASES)
def test_height_boundary_at_its_measuring_point(profile: str, index: int, machine: str) -> None:
    rule = BOOK.get(profile).height[index]
    font = {"peen-modbus": "5x7"}.get(machine)
    probe = _compose(profile, machine, font=font, char_height_mm=2.0)
    line = next(ln for ln in probe.lines if not rule.fields or set(rule.fields) & set(ln.fields))
    k = line.centre_extent_mm / line.height_mm
    verdicts = {}
    for side in (+1, -1):
        nominal = probe.process.nominal_for(rule.measured_at, rule.min_mm + side * DELTA, k)
        layout = _compose(profile, machine, font=font, char_height_mm=nominal)
        found = [f for f in _findings(layout, rule.rule, "line") if f"line {line.index + 1} " in f.subject]
        assert found and all(f.measured.endswith(rule.measured_at.words) for f in found)
        verdicts[side] = {f.severity for f in found}
    assert verdicts == {+1: {Severity.PASS}, -1: {Severity.ERROR}}


DEPTH_CASES = [(p, i) for p in PROFILES for i in range(len(BOOK.get(p).depth))]


@pytest.mark.parametrize(("profile", "index"), DEPTH_CASES)
def test_depth_boundary(profile: str, index: int) -> None:
    rule = BOOK.get(profile).depth[index]
    for side, expected in ((+1, Severity.PASS), (-1, Severity.ERROR)):
        depth = rule.min_mm + side * DELTA / 10
        layout = _compose(profile, "peen-modbus", font="5x7", force_pct=_peen_force_pct(depth))
        assert layout.process.depth_mm == pytest.approx(depth, abs=1e-9)
        (finding,) = [f for f in _findings(layout, rule.rule, "process")]
        assert finding.severity is expected, (side, finding)


@pytest.mark.parametrize("profile", PROFILES)
def test_wall_share_boundary(profile: str) -> None:
    rules = BOOK.get(profile)
    depth = 0.1
    for side, expected in ((+1, Severity.PASS), (-1, Severity.ERROR)):
        wall = depth / rules.integrity.max_depth_fraction * (1 + side * 0.01)
        data = request_dict(profile, machine="peen-modbus")
        data["component"]["wall_thickness_mm"] = wall
        data["options"].update(font="5x7", force_pct=_peen_force_pct(depth))
        layout = compose(MarkRequest.parse(data), machine=LIGHT)
        (finding,) = _findings(layout, rules.integrity.rule)
        assert finding.severity is expected


@pytest.mark.parametrize("profile", PROFILES)
def test_datamatrix_module_boundaries(profile: str) -> None:
    code = BOOK.get(profile).code
    for module, expected in (
        (code.module_min_mm + DELTA, Severity.PASS),
        (code.module_min_mm - DELTA, Severity.ERROR),
        (code.module_max_mm - DELTA, Severity.PASS),
        (code.module_max_mm + DELTA, Severity.ERROR),
    ):
        data = request_dict(profile)
        data["component"]["zone"] = [[0, 0], [80, 0], [80, 30], [0, 30]]
        data["component"]["existing_marks"] = [[[0, 26], [25, 26], [25, 30], [0, 30]]]
        data["options"].update(datamatrix=True, module_mm=module)
        layout = compose(MarkRequest.parse(data))
        (finding,) = _findings(layout, code.rule, "code module")
        assert finding.severity is expected, (module, finding)


ADJACENT = [p for p in PROFILES if BOOK.get(p).adjacent is not None]


@pytest.mark.parametrize("profile", ADJACENT)
def test_adjacency_gap_boundaries_say_how_distinct_is_modelled(profile: str) -> None:
    adj = BOOK.get(profile).adjacent
    assert adj is not None
    layout = compose(request(profile))
    x0, y0, x1, y1 = g.bounds(layout.mark_geometry())
    bad = Severity(adj.severity)
    for gap, expected in (
        (adj.min_gap_mm + DELTA, Severity.PASS),
        (adj.min_gap_mm - DELTA, bad),
        (adj.max_gap_mm - DELTA, Severity.PASS),
        (adj.max_gap_mm + DELTA, bad),
    ):
        mark = g.rect(x1 + gap, y0 - 1, x1 + gap + 5, y1 + 1)
        moved = dataclasses.replace(layout, existing=(mark,), zone=g.rect(-100, -100, 200, 200))
        (finding,) = _findings(moved, adj.rule, "placement")
        assert finding.severity is expected, (gap, finding)
        assert "visibly distinct" in finding.required


LENGTH_CASES = [
    (p, n)
    for p in PROFILES
    for n, s in BOOK.get(p).fields.items()
    if s.kind.value in ("serial", "text") and n in EXAMPLES[p]
]


@pytest.mark.parametrize(("profile", "name"), LENGTH_CASES)
def test_field_length_boundary(profile: str, name: str) -> None:
    spec = BOOK.get(profile).fields[name]
    digit = "1" * max(spec.min_digits, 1)
    for length, ok in ((spec.max_length, True), (spec.max_length + 1, False)):
        value = (digit + "A" * length)[:length]
        rules = BOOK.get(profile)
        _, findings = validate_content(rules, {**EXAMPLES[profile], name: value}, {}, TODAY)
        (f,) = [f for f in findings if f.subject == f"fields.{name}"]
        assert (f.severity is Severity.PASS) is ok, (length, f)


YEAR_CASES = [(p, n) for p in PROFILES for n, s in BOOK.get(p).fields.items() if s.year_of is not None]


@pytest.mark.parametrize(("profile", "name"), YEAR_CASES)
def test_year_boundaries_by_meaning(profile: str, name: str) -> None:
    spec = BOOK.get(profile).fields[name]
    rules = BOOK.get(profile)

    def severity(year: int) -> Severity:
        value = str(year) if 4 in spec.digits else f"{year % 100:02d}"
        _, findings = validate_content(rules, {**EXAMPLES[profile], name: value}, {}, TODAY)
        (f,) = [f for f in findings if f.subject == f"fields.{name}"]
        return f.severity

    assert severity(TODAY.year) is Severity.PASS
    recent = spec.year_of.value in ("import", "transfer", "marking")  # type: ignore[union-attr]
    if 4 in spec.digits or recent:
        assert severity(TODAY.year + 1) is Severity.ERROR  # in the future
    else:
        assert severity(TODAY.year + 1) is Severity.PASS  # '27' of manufacture is 1927
    assert severity(TODAY.year - 1) is Severity.PASS
    assert severity(TODAY.year - 2) is (Severity.WARNING if recent else Severity.PASS)


@pytest.mark.parametrize("profile", [p for p in PROFILES if BOOK.get(p).in_force is not None])
def test_in_force_date_boundary(profile: str) -> None:
    since = BOOK.get(profile).in_force.since  # type: ignore[union-attr]
    for day, expected in ((since, Severity.PASS), (since - dt.timedelta(days=1), Severity.WARNING)):
        fields = {**EXAMPLES[profile], "import_year": f"{day.year % 100:02d}"}
        layout = compose(request(profile, fields=fields, options={"today": day.isoformat()}))
        (f,) = [f for f in check(layout).findings if f.rule == "CA-FORCE"]
        assert f.severity is expected, (day, f)


@pytest.mark.parametrize("profile", [p for p in PROFILES if BOOK.get(p).exemption is not None])
def test_exemption_re_export_boundaries(profile: str) -> None:
    limit = BOOK.get(profile).exemption.max_days  # type: ignore[union-attr]
    for days, ok in ((0, True), (limit, True), (-1, False), (limit + 1, False)):
        ex = {"kind": "temporary-import", "purpose": "trade fair demonstration", "recorded_by": "sup-1"}
        ex["re_export_by"] = (TODAY + dt.timedelta(days=days)).isoformat()
        assert exemption_report(request(profile, exemption=ex)).passed is ok, days


@pytest.mark.parametrize("profile", PROFILES)
def test_quiet_zone_boundary(profile: str) -> None:
    need = BOOK.get(profile).code.quiet_zone_min_modules
    for modules, expected in ((need, Severity.PASS), (need - 1, Severity.ERROR)):
        data = request_dict(profile)
        data["component"]["zone"] = [[0, 0], [80, 0], [80, 30], [0, 30]]
        data["component"]["existing_marks"] = [[[0, 26], [25, 26], [25, 30], [0, 30]]]
        data["options"].update(datamatrix=True, quiet_zone_modules=modules)
        found = _findings(compose(MarkRequest.parse(data)), BOOK.get(profile).code.rule, "code quiet zone")
        (f,) = [f for f in found if "module" in f.measured]  # the width, not the intrusion check
        assert f.severity is expected
