"""A manifest read row by row (open_manifest): the same items and verdicts as reading it whole,
memory that does not grow with its length, and rows read again (and checked) when marked."""

from __future__ import annotations

import tracemalloc
from datetime import date
from pathlib import Path

import pytest

from markctl.jobs import manifest as manifest_module
from markctl.jobs import runner
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import ManifestError, open_manifest, parse_manifest, read_manifest
from markctl.jobs.runner import precheck, prepare, request_for
from markctl.jobs.verdict_log import VerdictLog
from markctl.layouts import _shared
from markctl.profiles import load_profile

from .test_precheck import HEADER, MIXED, SLIDE

DAY = date(2026, 11, 27)


@pytest.fixture
def catalogue(repo: Path) -> Catalogue:
    return Catalogue.from_toml((repo / "examples" / "import" / "parts.toml").read_text() + SLIDE)


def test_reading_in_small_pieces_finds_the_same_rows_and_issues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CRLF endings, a quoted cell over two lines, a blank line, bytes that are not UTF-8, a
    # duplicate, a byte-order mark: read in 5-byte pieces, every boundary falls somewhere awkward.
    raw = (
        b"\xef\xbb\xbf" + HEADER.replace(b"\n", b"\r\n")
        + b'P1,Beretta,"92\r\nFS",iti-import,frame,KE,26,yes\r\n\r\n'
        + b"P2,Ber\xe9tta,92FS,iti-import,frame,KE,26,yes\r\n"
        + b"P3,Beretta,92FS,iti-import,frame;slide,KE,26,yes\r\n"
        + b"P3,Beretta,92FS,iti-import,frame,KE,26,yes\n"
        + b"P4,Beretta,92FS,iti-import,frame,KE,26,yes"
    )  # fmt: skip
    whole = parse_manifest(raw)
    path = tmp_path / "m.csv"
    path.write_bytes(raw)
    monkeypatch.setattr(manifest_module, "_READ_BYTES", 5)
    reader = open_manifest(path)
    items = list(reader)
    assert items == whole.items and reader.manifest.issues == whole.issues
    assert reader.manifest.rows == whole.rows == 5
    assert [i.line for i in items] == [6, 6, 8]  # a row's line is its last one
    # The quoted cell over two lines is one row (line 3), refused for its line break.
    assert [(i.line, i.field) for i in whole.issues] == [(3, "model"), (5, "encoding"), (7, "serial")]
    with pytest.raises(ManifestError, match="read once"):
        list(reader)


def test_a_streamed_pre_check_judges_exactly_as_a_whole_one(
    tmp_path: Path, catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(HEADER + MIXED)
    machine = load_profile("grbl-1.1")
    whole = precheck(read_manifest(path), catalogue, machine, today=DAY, workers=1)
    monkeypatch.setattr(runner, "_POOL_MIN_ITEMS", 0)  # a pool even for this small manifest
    seen: list[runner.Verdict] = []
    streamed = precheck(open_manifest(path), catalogue, machine, today=DAY, workers=2, on_verdict=seen.append)
    assert isinstance(streamed.verdicts, VerdictLog)
    assert seen == list(streamed.verdicts) == whole.verdicts  # read again from the file, the same
    assert streamed.rows() == whole.rows()
    assert streamed.blocking({5}, {}) == whole.blocking({5}, {})
    assert [v.cycle_s for v in streamed.verdicts] == [v.cycle_s for v in whole.verdicts]
    for at in (0, 3, len(whole.verdicts) - 1):  # each item made again when marked, as if alone
        item = whole.verdicts[at].item
        remade, alone = (
            streamed.prepared[at],
            prepare(request_for(item, catalogue, machine, DAY), machine, item),
        )
        assert remade.verdict() == alone.verdict() == whole.verdicts[at]
        if alone.program is not None:
            assert remade.program is not None and remade.program.digest == alone.program.digest


def test_a_row_changed_after_the_pre_check_is_not_marked(tmp_path: Path, catalogue: Catalogue) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(
        HEADER + b"P1,Beretta,92FS,iti-import,frame,KE,26,yes\nP2,Beretta,92FS,iti-import,frame,KE,26,yes\n"
    )
    plan = precheck(open_manifest(path), catalogue, load_profile("grbl-1.1"), today=DAY, workers=1)
    path.write_bytes(
        HEADER + b"P1,Beretta,92FS,iti-import,frame,KE,26,yes\nP9,Beretta,92FS,iti-import,frame,KE,26,yes\n"
    )
    assert plan.verdicts[0].item.item_key == "BERETTA|P1|frame|iti-import"  # unchanged: read again
    with pytest.raises(ManifestError, match="line 3 changed since the pre-check"):
        plan.prepared[1]


def _kept_per_item(path: Path, catalogue: Catalogue, rows: int) -> tuple[float, int]:
    """Bytes a streamed plan keeps per item, and the peak traced while judging, for ``rows`` rows."""
    machine = load_profile("grbl-1.1")
    path.write_bytes(
        HEADER + b"".join(b"T%d,Beretta,92FS,iti-import,frame,KE,26,no\n" % i for i in range(rows))
    )
    _shared.clear()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        plan = precheck(open_manifest(path), catalogue, machine, today=DAY, workers=1)
        _shared.clear()  # bounded caches (tests/layouts/test_shared.py), not the plan's
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(plan.verdicts) == rows
    return (kept - before) / rows, peak - before


def test_a_streamed_plan_keeps_a_few_dozen_bytes_per_item(
    tmp_path: Path, catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    # The caches rows share are bounded (tests/layouts/test_shared.py); small bounds here, so that
    # they are full after a few rows and what grows with the manifest is all that is left.
    compose = sys.modules["markctl.layouts.compose"]
    for name in ("_LINE_CACHE_SIZE", "_GLYPH_CACHE_SIZE", "_PLACE_CACHE_SIZE"):
        monkeypatch.setattr(compose, name, 16)
    _kept_per_item(tmp_path / "warm.csv", catalogue, 300)  # what the first rows leave: imports, caches
    small, small_peak = _kept_per_item(tmp_path / "small.csv", catalogue, 300)
    large, large_peak = _kept_per_item(tmp_path / "large.csv", catalogue, 1200)
    # The verdict log (~50 bytes) and what a bounded cache still holds; a whole Manifest: ~2 KB per item.
    assert large < 160, f"{large:.0f} bytes kept per item"
    # Four times the rows: the peak grows by what is kept and the duplicate check (~100 bytes per
    # item while reading), not by the rows read or the layouts made.
    grown = (large_peak - small_peak) / 900
    assert grown < 400, f"the peak grew by {grown:.0f} bytes per item ({small_peak} -> {large_peak})"
