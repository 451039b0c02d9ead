"""Pre-check of a whole manifest: request building, per-row verdicts, what blocks a batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from markctl.errors import ConfigError
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import parse_manifest
from markctl.jobs.runner import precheck
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
