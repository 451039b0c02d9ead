"""Checks that must not pass by omission: plate room, request dates, years, adjacency, 2D codes."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from markctl.errors import LayoutError
from markctl.layouts import MarkRequest, Severity, check, compose

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "requests"


def _request(name: str, **changes: Any) -> dict[str, Any]:
    data = tomllib.loads((EXAMPLES / name).read_text())
    for key, value in changes.items():
        section, _, field = key.partition(".")
        data.setdefault(section, {})[field] = value
    return data


def _finding(data: dict[str, Any], rule: str, subject: str | None = None):  # type: ignore[no-untyped-def]
    report = check(compose(MarkRequest.parse(data)))
    found = [f for f in report.findings if f.rule == rule and (subject is None or f.subject == subject)]
    assert found, f"no {rule} finding"
    return found[0]


# The mark of eu-manufacture-polymer-plate.toml sits in the upper left of its 30 x 12 mm plate;
# everything right of x = 21 and below y = 4.5 is the room left for later marks.
REST_OF_PLATE = [[[21, 0], [30, 0], [30, 12], [21, 12]], [[0, 0], [21, 0], [21, 4.3], [0, 4.3]]]


@pytest.mark.parametrize("what", ["existing_marks", "keepouts"])
def test_room_on_the_plate_excludes_what_is_already_taken(what: str) -> None:
    assert _finding(_request("eu-manufacture-polymer-plate.toml"), "LV-182").severity is Severity.PASS
    crowded = _request("eu-manufacture-polymer-plate.toml", **{f"component.{what}": REST_OF_PLATE})
    room = _finding(crowded, "LV-182")
    assert room.severity is Severity.ERROR and room.measured == "no room left"


def test_a_request_cannot_date_its_checks_in_the_future() -> None:
    data = _request("iti-import-steel-frame.toml", **{"options.today": "2999-01-01"})
    with pytest.raises(LayoutError) as info:
        MarkRequest.parse(data)
    assert info.value.field == "options.today" and "in the future" in str(info.value)


@pytest.mark.parametrize("year", ["1802", "2010", "10"])
def test_an_import_year_long_past_is_flagged(year: str) -> None:
    finding = _finding(
        _request(
            "iti-import-steel-frame.toml", **{"fields.import_year": year, "options.today": "2026-11-27"}
        ),
        "ITI-8b",
        "fields.import_year",
    )
    assert finding.severity is Severity.WARNING and "more than a year ago" in finding.message


def test_last_years_import_is_fine() -> None:
    data = _request(
        "iti-import-steel-frame.toml", **{"fields.import_year": "25", "options.today": "2026-01-05"}
    )
    report = check(compose(MarkRequest.parse(data)))
    assert not [
        f for f in report.findings if f.subject == "fields.import_year" and f.severity is not Severity.PASS
    ]


def test_adjacency_without_existing_marks_is_not_a_silent_pass() -> None:
    data = _request("iti-import-steel-frame.toml", **{"component.existing_marks": []})
    finding = _finding(data, "ISACS-IMP", "component.existing_marks")
    assert finding.severity is Severity.WARNING


def test_data_matrix_quiet_zone_limit() -> None:
    data = _request("iti-stockpile-datamatrix.toml", **{"options.quiet_zone_modules": 0})
    finding = _finding(data, "DM-130", "code quiet zone")
    assert finding.severity is Severity.ERROR and finding.measured == "0 module(s)"


def test_data_matrix_symbol_size_limit() -> None:
    # This content is a 16 x 16 symbol: 1.7 mm modules make it 27.2 mm, over MIL-STD-130 25.4 mm.
    data = _request(
        "iti-stockpile-datamatrix.toml",
        **{
            "options.module_mm": 1.7,
            "component.zone": [[0, 0], [120, 0], [120, 60], [0, 60]],
            "component.existing_marks": [[[0, 56], [25, 56], [25, 60], [0, 60]]],
        },
    )
    data["machine"] = "grbl-1.1"
    finding = _finding(data, "DM-130", "code symbol")
    assert finding.severity is Severity.ERROR and finding.measured.startswith("27.20")
    module = _finding(data, "DM-130", "code module")
    assert module.severity is Severity.ERROR  # 1.7 mm is also over the 0.64 mm module limit


def test_a_code_cannot_carry_text_that_no_line_shows() -> None:
    from markctl.errors import ProfileError
    from markctl.layouts import bundled_rules

    user = """schema_version = 1
id = "xx-stockpile"
extends = "iti-stockpile"
name = "hidden text"
[code]
content = "HIDDEN-{serial}"
"""
    with pytest.raises((ProfileError, ValueError), match="holds text no line shows"):
        bundled_rules().with_texts([("xx-stockpile.toml", user)]).get("xx-stockpile")
    fine = user.replace("HIDDEN-{serial}", "{owner_country}/{serial}")
    assert bundled_rules().with_texts([("xx-stockpile.toml", fine)]).get("xx-stockpile").code.content
