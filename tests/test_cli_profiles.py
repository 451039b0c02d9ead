"""Machine profiles that catch real mistakes, through the CLI: numbers checked against their
neighbours, a broken file that does not hide the others, a banner regex shown as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from markctl.cli import main

GRBL = 'schema_version = 1\nid = "{id}"\nextends = "grbl-1.1"\nname = "test"\n{body}'

MISTAKES = [
    (
        "travel-short",
        "[protocol.settings]\n131 = 300\n",
        ("protocol.settings.131 = 300", "work_area_y_mm = 400"),
    ),
    (
        "area-outside",
        "[machine]\nwork_area_x_mm = 450.0\n",
        ("work_area_x_mm = 450", "protocol.settings.130 = 400"),
    ),
    (
        "feed-too-fast",
        "[machine]\nmax_feed_mm_min = 9000.0\n",
        ("max_feed_mm_min = 9000", "settings.110 = 6000"),
    ),
    ("no-power-scale", "[protocol.settings]\n30 = 0\n", ("protocol.settings.30",)),
    (
        "min-above-max",
        "[protocol.settings]\n31 = 1000\n",
        ("protocol.settings.31 = 1000", "settings.30 = 1000"),
    ),
    ("laser-mode-off", "[protocol.settings]\n32 = 0\n", ("protocol.settings.32", "laser mode")),
    ("poll-vs-baud", "[protocol]\nbaud = 9600\n", ("status_poll_hz_max = 5 Hz", "baud = 9600")),
]


@pytest.fixture
def profile_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir()
    monkeypatch.setenv("MARKCTL_PROFILE_PATH", str(folder))
    return folder


@pytest.mark.parametrize(("pid", "body", "names"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_validate_refuses_numbers_that_contradict_each_other(
    pid: str, body: str, names: tuple[str, ...], profile_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = profile_dir / f"{pid}.toml"
    path.write_text(GRBL.format(id=pid, body=body))
    assert main(["profiles", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
    for name in names:
        assert name in err


def test_a_consistent_profile_is_accepted(profile_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = profile_dir / "small-bed.toml"
    path.write_text(GRBL.format(id="small-bed", body="[machine]\nwork_area_x_mm = 300.0\n"))
    assert main(["profiles", "validate", str(path)]) == 0
    assert "ok:" in capsys.readouterr().out


def test_list_shows_the_good_and_names_the_broken(
    profile_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (profile_dir / "good-one.toml").write_text(GRBL.format(id="good-one", body=""))
    (profile_dir / "broken-one.toml").write_text(
        GRBL.format(id="broken-one", body="[protocol.settings]\n131 = 300\n")
    )
    assert main(["profiles", "list", "--json"]) == 1
    seen = capsys.readouterr()
    ids = {row["id"] for row in json.loads(seen.out)}
    assert {"good-one", "grbl-1.1", "peen-modbus"} <= ids and "broken-one" not in ids
    lines = seen.err.splitlines()
    assert len(lines) == 1 and "broken-one.toml" in lines[0] and "protocol.settings.131" in lines[0]


def test_show_keeps_the_banner_regex_as_written(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    assert main(["profiles", "show", "grbl-1.1"]) == 0
    out = capsys.readouterr().out
    written = re.search(r"banner_regex = '''(.*)'''", (repo / "firmware_profiles/grbl-1.1.toml").read_text())
    assert written is not None
    assert f"banner_regex={written.group(1)}" in out
