"""Manifests: good rows become items; every bad row gets a clear verdict; nothing stops at the first."""

from __future__ import annotations

from pathlib import Path

import pytest

from markctl.jobs.manifest import ManifestError, parse_manifest, read_manifest

HEADER = b"serial,manufacturer,model,calibre,mark_profile,components,country,year\n"


def test_good_manifest_expands_components() -> None:
    m = parse_manifest(HEADER + b"P123456,Beretta,92FS,9mm,iti-import,frame;slide;barrel,GB,26\n"
                       b"A-77,Glock,17,9mm,iti-import,frame,GB,26\n")  # fmt: skip
    assert m.ok and m.rows == 2 and len(m.items) == 4
    first = m.items[0]
    assert first.weapon_key == "BERETTA|P123456" and first.component == "frame"
    assert first.fields == {"country": "GB", "year": "26", "serial": "P123456", "manufacturer": "Beretta",
                            "model": "92FS", "calibre": "9mm"}  # fmt: skip
    assert first.item_key == "BERETTA|P123456|frame|iti-import"


def test_bom_blank_lines_and_header_case_are_tolerated() -> None:
    m = parse_manifest(
        b"\xef\xbb\xbfSerial, Manufacturer ,Mark Profile,Components\n\nX1,Acme,iti-import,frame\n\n"
    )
    assert m.ok and len(m.items) == 1 and m.items[0].line == 3


def test_missing_columns_are_named() -> None:
    with pytest.raises(ManifestError, match="line 1: missing column\\(s\\) mark_profile, components"):
        parse_manifest(b"serial,manufacturer\nX,Y\n")


@pytest.mark.parametrize(
    ("row", "line_field", "message"),
    [
        (b",Beretta,,,iti-import,frame,GB,26\n", "serial", "is empty"),
        (b"P1!,Beretta,,,iti-import,frame,GB,26\n", "serial", "is not a serial"),
        (b"P1,Beretta,,,iti-import,stock,GB,26\n", "components", "unknown component 'stock'"),
        (b"P1,Beretta,,,iti-import,frame;frame,GB,26\n", "components", "twice"),
        (b"P1,Beretta,iti-import,frame\n", "row", "has 4 cells, the header has 8"),
        (b"P1,Ber\xe9tta,,,iti-import,frame,GB,26\n", "encoding", "byte 6 (0xE9) is not UTF-8"),
    ],
)
def test_bad_rows_are_reported_with_line_and_field(row: bytes, line_field: str, message: str) -> None:
    m = parse_manifest(
        HEADER + b"OK1,Beretta,,,iti-import,frame,GB,26\n" + row + b"OK2,Beretta,,,iti-import,frame,GB,26\n"
    )
    assert [i.item_key.split("|")[1] for i in m.items] == ["OK1", "OK2"]
    (issue,) = m.issues
    assert issue.line == 3 and issue.field == line_field and message in issue.message


def test_duplicate_rows_point_at_the_first() -> None:
    m = parse_manifest(
        HEADER + b"P1,Beretta,,,iti-import,frame,GB,26\nP1 ,BERETTA,,,iti-import,frame;slide,GB,26\n"
    )
    assert [i.component for i in m.items] == ["frame", "slide"]
    (issue,) = m.issues
    assert issue.line == 3 and "already on line 2" in issue.message


def test_many_rows(tmp_path: Path) -> None:
    body = b"".join(b"S%06d,Acme,M,9mm,iti-import,frame,GB,26\n" % i for i in range(100_000))
    path = tmp_path / "big.csv"
    path.write_bytes(HEADER + body + b"S000005,Acme,M,9mm,iti-import,frame,GB,26\n")
    m = read_manifest(path)
    assert m.rows == 100_001 and len(m.items) == 100_000
    assert [str(i) for i in m.issues] == [
        "line 100002: serial: duplicate: ACME|S000005 frame iti-import is already on line 7"
    ]


def test_unreadable_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path / "nope.csv")
    with pytest.raises(ManifestError, match="empty"):
        parse_manifest(b"")
