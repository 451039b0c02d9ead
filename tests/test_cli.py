"""The CLI skeleton: help, version, profiles, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from markctl import __version__
from markctl.cli import main


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "profiles" in out and "demo" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"markctl {__version__}"


def test_profiles_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_id = {r["id"]: r for r in rows}
    assert by_id["grblhal"]["extends"] == "grbl-1.1"
    assert by_id["peen-modbus"]["protocol"] == "peen"


def test_profiles_show_prints_verified_and_assumed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "show", "telesis-tmp"]) == 0
    out = capsys.readouterr().out
    assert "VERIFIED" in out and "ASSUMED" in out and "BCC = XOR" in out


def test_profiles_show_json_is_the_merged_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "show", "fluidnc", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["protocol"]["line_buffer_chars"] == 256 and data["protocol"]["errors"]["9"]


def test_unknown_profile_is_input_error_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("markctl: error: nope: no profile with id 'nope'")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_debug_shows_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "profiles", "show", "nope"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_validate_exit_codes(tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = repo / "firmware_profiles" / "grblhal.toml"
    assert main(["profiles", "validate", str(good)]) == 0
    bad = tmp_path / "grblhal.toml"
    bad.write_text(good.read_text().replace("rx_buffer_bytes = 1024", "rx_buffer_bytes = 0"))
    assert main(["profiles", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: protocol.grbl.rx_buffer_bytes: Input should be greater than 0" in err


def test_usage_error_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "frobnicate"]) == 2
    assert main(["--no-such-flag"]) == 2


def test_console_script_runs(repo: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "markctl", "profiles", "show", "missing"],
        capture_output=True,
        text=True,
        cwd=repo,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("markctl: error:")


@pytest.mark.slow
def test_demo_runs_a_whole_session(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo-out"
    assert main(["demo", "--out", str(out), "--examples", str(repo / "examples")]) == 0
    text = capsys.readouterr().out
    assert "re-run: {'skipped': 4}" in text and "record chain intact" in text
    assert (out / "records.db").is_file()
    assert len(list(out.glob("previews/*/*.svg"))) == 6 and len(list(out.glob("previews/*/*.png"))) == 6 + 2
    assert len(list(out.glob("workpieces/*/*.png"))) == 6
    from markctl.records import ItemState, RecordStore

    with RecordStore.open(out / "records.db") as store:
        assert store.verify().ok
        assert {i.state for i in store.items()} == {ItemState.MARKED} and len(store.items()) == 6
