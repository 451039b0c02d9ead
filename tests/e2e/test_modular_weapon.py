"""A modular weapon: each essential component is its own item, all tied to one weapon record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from markctl.cli import main
from markctl.jobs.manifest import ManifestError, parse_manifest
from markctl.records import ItemState, RecordStore

CATALOGUE = """
[parts.frame]
material = "steel"
wall_thickness_mm = 3.0
zone = [[0, 0], [40, 0], [40, 16], [0, 16]]
[parts.frame.options]
origin_mm = [10, 10]

[parts.slide]
material = "steel"
wall_thickness_mm = 4.0
zone = [[0, 0], [45, 0], [45, 14], [0, 14]]
[parts.slide.options]
origin_mm = [10, 10]

[parts.barrel]
material = "hardened-steel"
wall_thickness_mm = 5.0
zone = [[0, 0], [40, 0], [40, 14], [0, 14]]
[parts.barrel.options]
origin_mm = [10, 10]
"""

MANIFEST = """serial,manufacturer,model,components,maker,country,year
NW26A0042,Nordwaffen,P9,frame;slide;barrel,NORDWAFFEN,AT,2026
"""


@pytest.fixture
def env(tmp_path: Path, records_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "markctl.toml").write_text(
        '[records]\nurl = "records.db"\n[machines.peen]\naddress = "sim://peen-modbus?clock=instant"\n'
        '[defaults]\nmachine = "peen"\noperator = "armourer-2"\nmark_profile = "eu-import"\n'
    )
    (tmp_path / "parts.toml").write_text(CATALOGUE)
    (tmp_path / "manifest.csv").write_text(MANIFEST)
    return tmp_path


def test_each_component_is_an_item_of_one_weapon(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["batch", "manifest.csv", "--parts", "parts.toml", "--yes", "--json"]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["counts"] == {"marked": 3}
    assert [r["item_key"].split("|")[2] for r in job["results"]] == ["frame", "slide", "barrel"]
    assert all(r["verification"]["passed"] for r in job["results"])
    # Every component is read character by character, dot by dot, the barrel's hardened steel too
    # (it gets more force, planned with the depth model the simulated dents follow).
    assert [r["verification"].get("text_read") for r in job["results"]] == [
        ["NORDWAFFEN AT", "P9 2026", "NW26A0042"]
    ] * 3
    assert all(r["verification"]["dots"]["missing_count"] == 0 for r in job["results"])
    assert main(["records", "show", "NORDWAFFEN|NW26A0042", "--json"]) == 0
    weapon = json.loads(capsys.readouterr().out)
    assert [i["component"] for i in weapon["items"]] == ["frame", "slide", "barrel"]
    assert {i["mark_profile"] for i in weapon["items"]} == {"eu-import"}  # from [defaults] mark_profile
    assert all(
        [r["event"] for r in i["history"]] == ["planned", "started", "marked"] for i in weapon["items"]
    )
    assert main(["jobs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {job["id"]: {"marked": 3}}
    with RecordStore.open(env / "records.db") as store:
        assert len(store.items(weapon_key="NORDWAFFEN|NW26A0042", state=ItemState.MARKED)) == 3


def test_mark_profile_column_is_needed_without_a_default() -> None:
    with pytest.raises(ManifestError, match="missing column\\(s\\) mark_profile"):
        parse_manifest(MANIFEST.encode())
    manifest = parse_manifest(MANIFEST.encode(), default_mark_profile="eu-import")
    assert {i.mark_profile for i in manifest.items} == {"eu-import"} and len(manifest.items) == 3


def test_dents_that_run_together_are_checked_where_the_text_landed(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Full force on small text: dents about 1 mm wide at a 0.27 mm dot pitch merge, so characters
    # cannot be read dot by dot; the check falls back to where the text landed and says why.
    # (0.45 mm deep: on a 6 mm wall, within ENG-WALL's 10 %.)
    parts = CATALOGUE.replace("[parts.frame.options]\n", "[parts.frame.options]\nforce_pct = 100\n")
    (env / "parts.toml").write_text(parts.replace("wall_thickness_mm = 3.0", "wall_thickness_mm = 6.0"))
    (env / "manifest.csv").write_text(MANIFEST.replace("frame;slide;barrel", "frame"))
    assert main(["batch", "manifest.csv", "--parts", "parts.toml", "--yes", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["state"] == "marked" and result["verification"]["passed"]
    assert "text_read" not in result["verification"]
    assert "run together: characters were not read" in result["verification"]["notes"][0]
