"""The rules issue 15 added, each with a passing and a failing example; every rule explains itself."""

from __future__ import annotations

from typing import Any

import pytest

from markctl.errors import ComplianceError, LayoutError
from markctl.layouts import MarkRequest, bundled_rules, check, compose
from markctl.layouts.checks import exemption_report
from markctl.layouts.content import ContentError, parse_flag
from markctl.layouts.rules import RuleKind, Severity

from .conftest import EXAMPLES, TODAY, failing, request, request_dict

BOOK = bundled_rules()


def test_every_bundled_rule_explains_itself_and_every_finding_carries_it() -> None:
    for pid in BOOK.ids:
        profile = BOOK.get(pid)
        for rule_id in profile.rule_ids:
            src = profile.source(rule_id)
            assert src is not None, (pid, rule_id)
            assert src.document and src.text
        for f in check(compose(request(pid))).findings:
            assert f.kind in {k.value for k in RuleKind} and f.source and f.text, f
    assert BOOK.get("iti-import").source("PRAC-HEIGHT").kind is RuleKind.PRACTICE  # type: ignore[union-attr]
    assert BOOK.get("us-import").source("US-SIZE").kind is RuleKind.LAW  # type: ignore[union-attr]
    assert BOOK.get("eu-import").source("EU-FONT").kind is RuleKind.IMPLEMENTING  # type: ignore[union-attr]


def test_every_bundled_height_rule_names_its_measuring_point_and_clause() -> None:
    for pid in BOOK.ids:
        for rule in BOOK.get(pid).height:
            assert "not stated" not in rule.measuring_clause, (pid, rule.rule)


def _exemption(**over: Any) -> dict[str, Any]:
    return {
        "kind": "temporary-import",
        "purpose": "trade fair demonstration, IWA 2027",
        "re_export_by": "2027-03-15",
        "recorded_by": "supervisor-1",
        **over,
    }


def test_temporary_import_exemption_is_honoured_and_reported() -> None:
    req = request("iti-import", exemption=_exemption(reference="KE-TI-2026-0042"))
    report = exemption_report(req)
    assert report.passed and report.exempt
    (f,) = report.findings
    assert f.rule == "ITI-8b-TEMP" and f.severity is Severity.INFO
    assert "supervisor-1" in f.measured and "2027-03-15" in f.measured and "trade fair" in f.measured
    assert f.kind == "instrument" and "temporary imports" in f.text
    with pytest.raises(LayoutError, match="exemption"):
        compose(req)  # nothing is composed for an exempt weapon


@pytest.mark.parametrize(
    ("profile", "over", "rule"),
    [
        ("iti-import", {"re_export_by": "2026-11-01"}, "ITI-8b-TEMP"),  # already past
        ("iti-import", {"re_export_by": "2031-01-01"}, "ITI-8b-TEMP"),  # not temporary
        ("us-import", {}, "ENG-EXEMPT"),  # 27 CFR 478.92 has no such exemption
    ],
)
def test_temporary_import_exemption_refused(profile: str, over: dict[str, Any], rule: str) -> None:
    report = exemption_report(request(profile, exemption=_exemption(**over)))
    assert not report.passed and not report.exempt and report.failed_rules == {rule}


def test_exemption_needs_a_purpose_and_a_supervisor() -> None:
    with pytest.raises(LayoutError) as info:
        request("iti-import", exemption=_exemption(purpose="x", recorded_by=""))
    text = str(info.value)
    assert "exemption.purpose" in text and "exemption.recorded_by" in text  # both at once


def test_too_small_eu_component_carries_the_serial_below_1_6_mm() -> None:
    data = request_dict("eu-import", fields={"serial": "Z123456"})
    data["component"].update(
        size_class="too-small", zone=[[0, 0], [12, 0], [12, 3], [0, 3]], existing_marks=[]
    )
    data["options"].update(char_height_mm=1.0)
    layout = compose(MarkRequest.parse(data))
    report = check(layout)
    assert report.passed, report.errors
    assert [ln.text for ln in layout.lines] == ["Z123456"]
    small = [f for f in report.findings if f.rule == "EU-SMALL"]
    assert small and small[0].severity is Severity.PASS
    assert not [f for f in report.findings if f.rule == "EU-FONT"]
    # The same mark on a normal component breaks EU-CONT (maker...) and EU-FONT.
    data["component"]["size_class"] = "normal"
    with pytest.raises(ContentError) as info:
        compose(MarkRequest.parse(data))
    assert {p[0] for p in info.value.problems} >= {"fields.maker", "fields.country"}


def test_multi_piece_frame_marks_the_housing() -> None:
    def report(subpart: str) -> Any:
        data = request_dict("us-import")
        data["component"]["modular_subpart"] = subpart
        return check(compose(MarkRequest.parse(data)))

    assert report("housing").passed
    half = report("housing-half")
    assert half.passed and any(f.rule == "US-MULTI" and "other half" in f.message for f in half.findings)
    assert report("other").failed_rules == {"US-MULTI"}


def test_scripts_eu_allows_greek_and_cyrillic_us_does_not_and_nobody_mixes() -> None:
    cyrillic = "ЖК12345"
    # US: Roman letters only (ATF P 5320.8): a Cyrillic serial stays an error.
    errors, _ = failing(request("us-import", fields={**EXAMPLES["us-import"], "serial": cyrillic}))
    assert errors == {"US-CHAR"}
    # EU: Cyrillic is a lawful script (2019/68 Annex), drawn by the Hershey Cyrillic face.
    assert failing(request("eu-import", fields={**EXAMPLES["eu-import"], "serial": cyrillic})) == (
        set(),
        set(),
    )
    greek = {**EXAMPLES["eu-import"], "maker": "ΑΘΗΝΑ", "country": "GR", "serial": "ΑΒ12345"}
    assert failing(request("eu-import", fields=greek)) == (set(), set())
    # The 5x7 dot matrix draws Cyrillic too (its own bitmaps); a letter no font has is refused by
    # ENG-GLYPH, never substituted (test_profiles_rules: '#' in a user profile).
    data = request_dict("eu-import", fields={**EXAMPLES["eu-import"], "serial": cyrillic})
    data["options"]["font"] = "5x7"
    assert failing(MarkRequest.parse(data)) == (set(), set())
    # A serial mixing Latin A and Cyrillic A is refused: it cannot be typed back from the weapon.
    with pytest.raises(ComplianceError) as info:
        compose(request("eu-import", fields={**EXAMPLES["eu-import"], "serial": "A\u0410123"}))
    assert info.value.rule == "EU-ALPHA" and "look-alike" in str(info.value)


def test_canada_in_force_date_is_stated_and_warned_about() -> None:
    rules = BOOK.get("ca-import")
    assert rules.in_force is not None and "assumed" in rules.in_force.assumption
    report = check(compose(request("ca-import")))
    (f,) = [f for f in report.findings if f.rule == "CA-FORCE"]
    assert f.severity is Severity.PASS and rules.in_force.since.isoformat() in f.required
    early = request(
        "ca-import", fields={"country": "CA", "import_year": "25"}, options={"today": "2025-06-01"}
    )
    _, warnings = failing(early)
    assert "CA-FORCE" in warnings


def test_every_field_error_of_a_request_at_once() -> None:
    with pytest.raises(ContentError) as info:
        compose(request("eu-import", fields={"serial": "Z1", "year": "99x"}))
    fields = [p[0] for p in info.value.problems]
    assert fields == ["fields.maker", "fields.country", "fields.year"]
    assert len(str(info.value).splitlines()) == 3
    assert TODAY  # the examples are dated


@pytest.mark.parametrize(
    ("text", "value"), [("yes", True), ("No", False), ("1", True), ("0", False), ("x", True)]
)
def test_flags_read_yes_and_no(text: str, value: bool) -> None:
    assert parse_flag(text) is value


@pytest.mark.parametrize("text", ["maybe", "", "ja", "2"])
def test_flags_refuse_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="not yes or no"):
        parse_flag(text)
