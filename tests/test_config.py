"""Configuration precedence: flag > environment > markctl.toml > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from markctl.config import DEFAULT_RECORDS, load_settings
from markctl.errors import ConfigError

TOML = """
[records]
url = "sqlite:///from-file.db"
[machines.laser]
address = "sim://grbl-1.1"
[machines.peen]
address = "peen+modbus-tcp://127.0.0.1:5020?unit=1"
profile = "peen-modbus"
[defaults]
machine = "laser"
operator = "armourer-1"
"""


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("MARKCTL_CONFIG", "MARKCTL_RECORDS", "MARKCTL_MACHINE", "MARKCTL_OPERATOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "markctl.toml"
    path.write_text(TOML)
    return path


def test_file_values(settings_file: Path) -> None:
    s = load_settings()
    assert s.source == str(settings_file)
    assert s.records_location() == "sqlite:///from-file.db"
    assert s.machine().address == "sim://grbl-1.1"
    assert s.machine("peen").profile == "peen-modbus"
    assert s.operator() == "armourer-1"


def test_environment_beats_file_and_flag_beats_environment(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKCTL_RECORDS", "/tmp/env.db")
    monkeypatch.setenv("MARKCTL_MACHINE", "peen")
    monkeypatch.setenv("MARKCTL_OPERATOR", "env-op")
    s = load_settings()
    assert s.records_location() == "/tmp/env.db" and s.records_location("/tmp/flag.db") == "/tmp/flag.db"
    assert s.machine().address.startswith("peen+") and s.machine("laser").address == "sim://grbl-1.1"
    assert s.operator() == "env-op" and s.operator("flag-op") == "flag-op"
    assert s.machine("sim://telesis-tmp").address == "sim://telesis-tmp"


def test_no_file_gives_defaults_and_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in ("MARKCTL_CONFIG", "MARKCTL_RECORDS", "MARKCTL_MACHINE", "MARKCTL_OPERATOR"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert s.records_location() == str(DEFAULT_RECORDS)
    with pytest.raises(ConfigError, match="no machine given"):
        s.machine()
    with pytest.raises(ConfigError, match="unknown machine 'lazer'"):
        s.machine("lazer")
    with pytest.raises(ConfigError, match="operator"):
        s.operator()


def test_bad_file_names_key(settings_file: Path) -> None:
    settings_file.write_text("[machines.laser]\nadress = 'sim://grbl-1.1'\n")
    with pytest.raises(ConfigError, match="machines.laser.address: Field required"):
        load_settings()
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(settings_file.parent / "missing.toml")
