"""Manifest columns of a temporary-import exemption (ITI 8(b)): read into the item, every problem named
by line and column at once, and the pre-check's verdict ``exempt`` (or ``invalid``, never overridable)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import parse_manifest
from markctl.jobs.runner import precheck
from markctl.profiles import load_profile

HEADER = ("serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark,"
          "exemption,exemption_purpose,exemption_re_export_by,exemption_reference\n")  # fmt: skip
SOON = (date.today() + timedelta(days=60)).isoformat()


def _manifest(*rows: str) -> bytes:
    return (HEADER + "".join(r + "\n" for r in rows)).encode()


def test_exemption_columns_reach_the_item() -> None:
    m = parse_manifest(
        _manifest(f"T1,Glock,17,iti-import,frame,KE,26,yes,Temporary-Import,trade fair IDEX 2027,{SOON},C-1")
    )
    assert m.ok
    fields = m.items[0].fields
    assert fields["exemption"] == "temporary-import"  # kinds are read in any case
    assert fields["exemption_purpose"] == "trade fair IDEX 2027" and fields["exemption_re_export_by"] == SOON


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ("temporary-import,,,", {("exemption_purpose", "is empty"), ("exemption_re_export_by", "is empty")}),
        (f"loan,trade fair IDEX 2027,{SOON},", {("exemption", "unknown exemption 'loan'")}),
        (
            "temporary-import,trade fair IDEX 2027,31/03/2027,",
            {("exemption_re_export_by", "'31/03/2027' is not")},
        ),
        (
            f",trade fair IDEX 2027,{SOON},",
            {("exemption", "is empty but exemption_purpose, exemption_re_export_by")},
        ),
    ],
)
def test_bad_exemption_cells_are_named(cells: str, expected: set[tuple[str, str]]) -> None:
    m = parse_manifest(_manifest(f"T1,Glock,17,iti-import,frame,KE,26,yes,{cells}"))
    assert not m.items
    found = {(i.field, i.message) for i in m.issues}
    assert all(i.line == 2 for i in m.issues) and len(found) == len(expected)
    for column, start in expected:
        assert any(f == column and msg.startswith(start) for f, msg in found), (column, found)


def test_precheck_verdicts(repo: Path) -> None:
    past = (date.today() - timedelta(days=1)).isoformat()
    m = parse_manifest(_manifest(
        "M1,Glock,17,iti-import,frame,KE,26,yes,,,,",
        f"T1,Glock,17,iti-import,frame,KE,26,yes,temporary-import,trade fair IDEX 2027,{SOON},C-1",
        f"T2,Glock,17,iti-import,frame,KE,26,yes,temporary-import,trade fair IDEX 2027,{past},C-2",
        f"T3,Glock,17,us-import,frame,KE,26,yes,temporary-import,trade fair IDEX 2027,{SOON},C-3",
    ))  # fmt: skip
    plan = precheck(m, Catalogue.load(repo / "examples/import/parts.toml"), load_profile("grbl-1.1"))
    verdicts = {v.item.identity["serial"]: v for v in plan.verdicts}
    assert verdicts["M1"].verdict == "ok" and verdicts["T1"].verdict == "exempt"
    assert verdicts["T2"].verdict == "invalid" and "[ITI-8b-TEMP]" in verdicts["T2"].problems[0]
    assert verdicts["T3"].verdict == "invalid" and "[ENG-EXEMPT]" in verdicts["T3"].problems[0]
    # A refused exemption is no finding a supervisor overrides: the rows still block the batch.
    assert set(plan.blocking(set(), {4: "override it", 5: "override it"})) == {4, 5}
    # The item made again when the batch runs has the same verdict, no layout and no program.
    again = plan.prepared[1]
    assert again.verdict() == verdicts["T1"] and again.layout is None and again.program is None
