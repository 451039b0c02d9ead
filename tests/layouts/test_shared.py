"""Work shared between the rows of a manifest (layouts/_shared.py): glyph geometry, placed lines and
the orders of repeated lines are computed once, and every layout and program made with them is
exactly the one made with nothing shared."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from markctl.layouts import MarkRequest, _shared, check, compose, ordering, program
from markctl.layouts.toolpath import composed_strokes

EXAMPLES = Path(__file__).parents[2] / "examples" / "requests"
SERIALS = ["0012345", "0012346", "0099999", "0012345", "1112345", "0012347", "7654321", "0000001"]


def _request(name: str, machine: str = "grbl-1.1") -> MarkRequest:
    data = MarkRequest.from_toml((EXAMPLES / name).read_text()).model_dump(mode="json")
    data["machine"] = machine
    data["options"]["today"] = "2026-11-27"
    if machine == "telesis-tmp":
        # Its stored pattern places the fields (5, 19), (5, 14), ...: a surface where they fall.
        data["component"].update(zone=[[0, 0], [60, 0], [60, 25], [0, 25]], existing_marks=[])
        data["options"].update(origin_mm=[0.0, 0.0], datamatrix=False)
    return MarkRequest.parse(data)


def _forget() -> None:
    """Nothing shared: the state of a process that composes its first row."""
    _shared.clear()
    sys.modules["markctl.layouts.compose"]._FREE_CACHE.__dict__.clear()  # type: ignore[attr-defined]


def _cache(name: str) -> _shared.LRU[object]:
    cache = _shared.existing(name)
    assert cache is not None, f"no cache {name}"
    return cache


@pytest.fixture(autouse=True)
def _caches_on() -> Iterator[None]:
    _shared.set_enabled(True)
    _forget()
    yield
    _shared.set_enabled(True)
    _forget()


@pytest.mark.parametrize(
    ("example", "machine"),
    [
        ("iti-stockpile-datamatrix.toml", "grbl-1.1"),  # laser: lines + a hatched Data Matrix
        ("iti-import-steel-frame.toml", "grbl-1.1"),  # import mark: two lines beside the maker's
        ("iti-stockpile-datamatrix.toml", "telesis-tmp"),  # a pattern machine: fields, no ordering
    ],
)
def test_rows_composed_and_programmed_with_shared_work_equal_each_row_alone(
    example: str, machine: str
) -> None:
    base = _request(example, machine)
    shared = []
    for serial in SERIALS:
        layout = compose(base.with_fields(serial=serial))
        shared.append((layout, check(layout), program(layout)))
    glyphs, lines = _cache("compose.glyphs"), _cache("compose.lines")
    assert glyphs.hits > 0 and lines.hits > 0, "rows shared no glyph and no line"
    if machine == "grbl-1.1":
        assert _cache("ordering.parts").hits > 0, "no line's order was shared"
    for serial, (layout, report, prog) in zip(SERIALS, shared, strict=True):
        _forget()
        alone = compose(base.with_fields(serial=serial))
        assert [line.text for line in layout.lines] == [line.text for line in alone.lines]
        for got, want in zip(composed_strokes(layout), composed_strokes(alone), strict=True):
            assert np.array_equal(got.points, want.points)
        assert report.to_dict() == check(alone).to_dict()  # the same verdict, finding for finding
        assert prog.digest == program(alone).digest  # the same program: order included


def test_turning_the_caches_off_changes_nothing_but_the_time() -> None:
    base = _request("iti-stockpile-datamatrix.toml")
    with_caches = [program(compose(base.with_fields(serial=s))).digest for s in SERIALS]
    _shared.set_enabled(False)
    _forget()
    without = [program(compose(base.with_fields(serial=s))).digest for s in SERIALS]
    assert len(_cache("compose.glyphs")) == 0, "a cache filled while off"
    assert with_caches == without


def test_shared_geometry_cannot_be_changed_by_one_row() -> None:
    base = _request("iti-stockpile-datamatrix.toml")
    layout = compose(base.with_fields(serial="0012345"))
    stroke = layout.lines[0].glyphs[0].strokes[0]
    with pytest.raises(ValueError, match="read-only"):
        stroke[0, 0] = 99.0


def test_every_cache_is_bounded() -> None:
    cache: _shared.LRU[int] = _shared.LRU(3)
    for i in range(10):
        cache.put(i, i)
        cache.get(0)  # the most recently used entry stays
    assert len(cache) == 3 and cache.get(0) == 0 and cache.get(1) is None
    # Many distinct rows: the line and glyph caches stop at their size.
    base = _request("iti-import-steel-frame.toml")
    compose_module = sys.modules["markctl.layouts.compose"]
    compose_module._LINE_CACHE_SIZE, size = 8, compose_module._LINE_CACHE_SIZE
    try:
        _shared.clear()
        for i in range(30):
            compose(base.with_fields(serial=f"X{i:06d}"))
        assert _cache("compose.lines").size == 8 and len(_cache("compose.lines")) == 8
    finally:
        compose_module._LINE_CACHE_SIZE = size


def test_ordering_by_parts_is_deterministic_and_close_to_ordering_the_whole() -> None:
    layout = compose(_request("iti-stockpile-datamatrix.toml"))
    strokes = composed_strokes(layout)
    starts = np.array([s.points[0] for s in strokes])
    ends = np.array([s.points[-1] for s in strokes])
    from markctl.layouts.toolpath import _parts

    parts = _parts(layout, len(strokes))
    assert len(parts) == len(layout.lines) + 1 and sum(parts) == len(strokes)
    kicks = [ordering.DEFAULT_KICKS_PER_STROKE * c for c in parts]
    cold = ordering.order_parts(starts, ends, parts, kicks)
    warm = ordering.order_parts(starts, ends, parts, kicks)
    assert np.array_equal(cold[0], warm[0]) and np.array_equal(cold[1], warm[1])
    assert sorted(cold[0].tolist()) == list(range(len(strokes)))  # every stroke once
    by_parts = ordering.travel(starts, ends, *cold)
    whole = ordering.travel(starts, ends, *ordering.order(starts, ends))
    # bench/ordering.py holds both within 1.05 x LKH-3; here: within 5 % of ordering the whole.
    assert by_parts <= 1.05 * whole
    with pytest.raises(ValueError, match="the parts count"):
        ordering.order_parts(starts, ends, [1, 2], [2, 4])
