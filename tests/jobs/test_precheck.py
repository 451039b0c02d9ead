"""Pre-check of a whole manifest: request building, per-row verdicts, what blocks a batch."""

from __future__ import annotations

import asyncio
import threading
import tracemalloc
from datetime import date
from pathlib import Path

import pytest

from markctl.errors import ConfigError
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import parse_manifest
from markctl.jobs.runner import precheck
from markctl.layouts import _shared
from markctl.profiles import load_profile


@pytest.fixture
def catalogue(repo: Path) -> Catalogue:
    return Catalogue.load(repo / "examples" / "import" / "parts.toml")


HEADER = b"serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark\n"


def _plan(rows: bytes, catalogue: Catalogue):  # type: ignore[no-untyped-def]
    return precheck(parse_manifest(HEADER + rows), catalogue, load_profile("grbl-1.1"))


def test_example_shipment_prechecks_clean(repo: Path, catalogue: Catalogue) -> None:
    from markctl.jobs.manifest import read_manifest

    plan = precheck(read_manifest(repo / "examples/import/manifest.csv"), catalogue, load_profile("grbl-1.1"))
    assert [r["verdict"] for r in plan.rows()] == ["ok"] * 4
    assert plan.blocking(set(), {}) == {}


def test_serial_is_left_out_when_the_weapon_has_one(catalogue: Catalogue) -> None:
    plan = _plan(
        b"P1,Beretta,92FS,iti-import,frame,KE,26,yes\nP2,Beretta,92FS,iti-import,frame,KE,26,no\n", catalogue
    )
    with_serial = [[line.text for line in p.layout.lines] for p in plan.prepared]
    assert with_serial == [["KE 26"], ["KE 26", "P2"]]
    assert (
        plan.prepared[0].program is not None
        and plan.prepared[0].program.digest != plan.prepared[1].program.digest
    )  # type: ignore[union-attr]


def test_bad_rows_block_unless_excluded(catalogue: Catalogue) -> None:
    plan = _plan(
        b"P1,Beretta,92FS,iti-import,frame,KE,26,yes\n"
        b"P2,Beretta,92FS,iti-import,frame,XX,26,yes\n"  # not an ISO 3166-1 country
        b"P3,Beretta,92FS,iti-import,frame,KE,31,yes\n",  # a year in the future
        catalogue,
    )
    verdicts = {r["line"]: r for r in plan.rows()}
    assert verdicts[2]["verdict"] == "ok"
    assert verdicts[3]["verdict"] != "ok" and "import_country" in " ".join(verdicts[3]["problems"])
    assert verdicts[4]["verdict"] != "ok" and "import_year" in " ".join(verdicts[4]["problems"])
    assert set(plan.blocking(set(), {})) == {3, 4}
    assert plan.blocking({3, 4}, {}) == {}


def test_unknown_component_surface_is_a_clear_row_error(catalogue: Catalogue) -> None:
    plan = _plan(b"P1,Beretta,92FS,iti-import,slide,KE,26,yes\n", catalogue)
    (row,) = plan.rows()
    assert row["verdict"] == "invalid" and "no surface for component 'slide'" in row["problems"][0]


def test_catalogue_prefers_the_model(tmp_path: Path) -> None:
    cat = Catalogue.from_toml(
        "[parts.frame]\nmaterial='steel'\nzone=[[0,0],[10,0],[10,5]]\n"
        "[parts.G17.frame]\nmaterial='glass-filled-polymer'\nzone=[[0,0],[20,0],[20,5]]\n"
    )
    assert cat.lookup("g17", "frame").component["material"] == "glass-filled-polymer"
    assert cat.lookup("92FS", "frame").component["material"] == "steel"
    with pytest.raises(ConfigError, match="no surface for component 'barrel'"):
        cat.lookup(None, "barrel")
    with pytest.raises(ConfigError, match="needs a \\[parts"):
        Catalogue.from_toml("x = 1")


# --- streaming, the worker pool, and what a plan keeps -------------------------------------------

MIXED = b"".join(
    (
        b"M%d,Beretta,92FS,iti-import,frame,%s,26,%s\n"
        % (i, b"XX" if i % 11 == 5 else b"KE", b"no" if i % 3 else b"yes")
    )
    + (b"R%d,Arsenal,SLR-95,iti-import,receiver,KE,26,yes\n" % i if i % 4 == 0 else b"")
    + (b"S%d,Beretta,92FS,iti-import,slide,KE,26,yes\n" % i if i % 13 == 0 else b"")
    for i in range(48)
)


SLIDE = """
[parts.slide]
material = "steel"
wall_thickness_mm = 2.5
zone = [[0, 0], [50, 0], [50, 10], [0, 10]]
"""


@pytest.fixture
def mixed_catalogue(repo: Path) -> Catalogue:
    # With a slide surface: an import mark on a slide composes but is not compliant (ITI para 10).
    return Catalogue.from_toml((repo / "examples" / "import" / "parts.toml").read_text() + SLIDE)


def test_pool_judges_exactly_as_one_process(
    mixed_catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from markctl.jobs import runner

    catalogue = mixed_catalogue
    manifest = parse_manifest(HEADER + MIXED)
    machine = load_profile("grbl-1.1")
    alone = precheck(manifest, catalogue, machine, today=date(2026, 11, 27), workers=1)
    monkeypatch.setattr(runner, "_POOL_MIN_ITEMS", 0)  # a pool even for this small manifest
    streamed: list[runner.Verdict] = []
    pooled = precheck(manifest, catalogue, machine, today=date(2026, 11, 27), workers=2,
                      on_verdict=streamed.append)  # fmt: skip
    assert pooled.verdicts == alone.verdicts
    assert streamed == pooled.verdicts  # reported one by one, in manifest order
    assert [v.item for v in streamed] == manifest.items
    assert pooled.rows() == alone.rows()
    verdicts = {v.verdict for v in pooled.verdicts}
    assert verdicts == {"ok", "invalid", "not compliant"}  # the mix covers every outcome


@pytest.mark.parametrize("pool", [False, True])
def test_cancel_stops_the_precheck(catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch, pool: bool) -> None:
    from markctl.jobs import runner

    if pool:
        monkeypatch.setattr(runner, "_POOL_MIN_ITEMS", 0)
        monkeypatch.setattr(runner, "_CHUNK", 4)
    manifest = parse_manifest(HEADER + MIXED)
    cancel = threading.Event()
    seen: list[runner.Verdict] = []

    def on_verdict(v: runner.Verdict) -> None:
        seen.append(v)
        cancel.set()

    with pytest.raises(runner.PrecheckCancelledError, match="cancelled; nothing was marked"):
        precheck(manifest, catalogue, load_profile("grbl-1.1"), workers=2 if pool else 1,
                 on_verdict=on_verdict, cancel=cancel)  # fmt: skip
    # At most the chunks already in flight are reported after the cancel.
    assert 1 <= len(seen) <= (1 if not pool else 4 * 2 * 2)
    assert len(seen) < len(manifest.items)


def test_plan_keeps_verdicts_and_remakes_each_item_as_if_alone(catalogue: Catalogue) -> None:
    from markctl.jobs.runner import Verdict, prepare, request_for

    manifest = parse_manifest(HEADER + MIXED)
    machine = load_profile("grbl-1.1")
    day = date(2026, 11, 27)
    plan = precheck(manifest, catalogue, machine, today=day, workers=1)
    assert all(type(v) is Verdict for v in plan.verdicts)
    for at in (0, 1, 3):
        item = manifest.items[at]
        remade = plan.prepared[at]
        alone = prepare(request_for(item, catalogue, machine, day), machine, item)
        assert remade.program is not None and alone.program is not None
        assert remade.program.digest == alone.program.digest
        assert remade.verdict() == alone.verdict() == plan.verdicts[at]


def test_plan_memory_does_not_grow_with_layouts(catalogue: Catalogue) -> None:
    # Before, a plan held every item's layout and program (~52 KB each). Now a verdict per item.
    machine = load_profile("grbl-1.1")
    rows = b"".join(b"T%d,Beretta,92FS,iti-import,frame,KE,26,no\n" % i for i in range(60))
    manifest = parse_manifest(HEADER + rows)
    precheck(parse_manifest(HEADER + rows[:45]), catalogue, machine, workers=1)  # warm every cache
    _shared.clear()  # the glyphs and lines rows share: bounded (tests/layouts/test_shared.py), not the plan's
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        plan = precheck(manifest, catalogue, machine, workers=1)
        _shared.clear()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(plan.verdicts) == 60
    assert kept / 60 < 2_000, f"{kept / 60:.0f} bytes kept per item"


def test_a_threaded_caller_gets_a_forkserver_pool(
    mixed_catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service pre-checks from a worker thread while the event loop runs: its pool must not fork
    # that multi-threaded process. Same verdicts as judging in one process.
    from markctl.jobs import runner

    manifest = parse_manifest(HEADER + MIXED[:1500])
    machine = load_profile("grbl-1.1")
    alone = precheck(manifest, mixed_catalogue, machine, workers=1)
    monkeypatch.setattr(runner, "_POOL_MIN_ITEMS", 0)
    methods: list[str] = []
    real = runner.ProcessPoolExecutor

    def spy(*args: object, **kwargs: object) -> object:
        methods.append(kwargs["mp_context"].get_start_method())  # type: ignore[attr-defined]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "ProcessPoolExecutor", spy)

    async def main() -> runner.Plan:
        return await runner.precheck_off_loop(manifest, mixed_catalogue, machine)

    assert asyncio.run(main()).verdicts == alone.verdicts
    assert methods == ["forkserver"]


async def test_cancelling_the_awaiting_task_stops_the_precheck(catalogue: Catalogue) -> None:
    from markctl.jobs import runner

    manifest = parse_manifest(HEADER + MIXED * 3)
    seen: list[runner.Verdict] = []
    task = asyncio.ensure_future(
        runner.precheck_off_loop(manifest, catalogue, load_profile("grbl-1.1"), on_verdict=seen.append)
    )
    while not seen:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(seen) < len(manifest.items)
