"""``markctl machines add|list|remove|probe``, ``config show`` and ``--profile`` with a hardware address.

The probe is run against simulators served by ``markctl sim serve`` in another process, over
loopback TCP, exactly as a real machine behind a serial-to-Ethernet server would be reached.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from markctl.cli import main

BIGBED = """schema_version = 1
id = "grbl-bigbed"
extends = "grbl-1.1"
name = "A profile copied from a bigger machine (consistent in itself)"
[machine]
work_area_x_mm = 500.0
[protocol.settings]
30 = 255
130 = 500
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("MARKCTL_RECORDS", str(tmp_path / "records.db"))
    for name in ("MARKCTL_MACHINE", "MARKCTL_OPERATOR", "MARKCTL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "grbl-bigbed.toml").write_text(BIGBED)
    monkeypatch.setenv("MARKCTL_PROFILE_PATH", str(tmp_path / "profiles"))
    return tmp_path


@pytest.fixture
def grbl_sim(workdir: Path) -> Iterator[str]:
    """A simulated GRBL laser on a loopback TCP port (another process); yields its address."""
    proc = subprocess.Popen([sys.executable, "-m", "markctl", "sim", "serve", "grbl-1.1", "--tcp", "127.0.0.1:0",
                             "--clock", "instant", "--seconds", "90"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=workdir)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving grbl-1.1" in line, proc.stderr.read() if proc.stderr else line
        yield "grbl+tcp://" + line.rsplit(" on ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_probe_names_every_difference_and_moves_nothing(
    grbl_sim: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["machines", "probe", grbl_sim, "--profile", "grbl-bigbed", "--json"]) == 1
    seen = capsys.readouterr()
    checks = {c["what"]: c for c in json.loads(seen.out)["checks"]}
    diffs = {what for what, c in checks.items() if not c["ok"]}
    assert diffs == {
        "$30 (S for 100 % power (spindle max))",
        "$130 (X max travel, mm)",
        "X travel ($130) covers the work area",
    }
    assert checks["$30 (S for 100 % power (spindle max))"]["device"] == "1000"
    assert checks["X travel ($130) covers the work area"]["profile"] == "500"
    err = seen.err.splitlines()
    assert len(err) == 1 and "3 difference(s)" in err[0] and "$30" in err[0] and "$130" in err[0]
    # The same machine against the profile it really runs: no difference, exit 0.
    assert main(["machines", "probe", grbl_sim, "--profile", "grbl-1.1"]) == 0
    assert "matches profile grbl-1.1" in capsys.readouterr().out


def test_probe_of_a_simulated_modbus_marker_reads_the_whole_map(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["machines", "probe", "sim://peen-modbus", "--json"]) == 0
    checks = json.loads(capsys.readouterr().out)["checks"]
    names = {c["what"] for c in checks}
    assert {"holding 2 (status)", "holding 53 (speed_pct)", "discrete input 0 (ready)"} <= names
    assert all(c["ok"] for c in checks)


def test_add_list_remove_and_probe_by_name(
    workdir: Path, grbl_sim: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "markctl.toml").write_text("# the depot's machines\n[defaults]\noperator = 'op-1'\n")
    assert main(["machines", "add", "laser", grbl_sim, "--profile", "grbl-1.1", "--default"]) == 0
    assert main(["machines", "add", "laser", grbl_sim, "--profile", "grbl-1.1"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert (
        main(["machines", "add", "bad", "grbl+serial:///dev/null?baudrate=9600", "--profile", "grbl-1.1"])
        == 2
    )
    assert "baudrate" in capsys.readouterr().err
    text = (workdir / "markctl.toml").read_text()
    assert text.startswith("# the depot's machines") and 'profile = "grbl-1.1"' in text and "bad" not in text
    assert main(["machines", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"name": "laser", "address": grbl_sim, "profile": "grbl-1.1", "default": True}]
    assert main(["config", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["defaults"] == {"machine": "laser", "operator": "op-1", "mark_profile": None}
    assert shown["records_from"] == "MARKCTL_RECORDS"
    # The default machine, by name (a "real" one over TCP, with its profile), answers a probe.
    assert main(["machines", "probe", "laser"]) == 0
    assert "laser matches profile grbl-1.1" in capsys.readouterr().out
    assert main(["machines", "remove", "laser"]) == 0
    assert "default machine" in capsys.readouterr().out
    assert main(["machines", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_profile_flag_reaches_a_hardware_address(
    grbl_sim: str, workdir: Path, new_registry: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    new_registry(workdir / "records.db", training=False)  # a real machine's address: a production registry
    request = Path(__file__).resolve().parents[1] / "examples/requests/iti-import-steel-frame.toml"
    base = [
        "mark",
        str(request),
        "--serial",
        "T2",
        "--manufacturer",
        "M",
        "--operator",
        "x",
        "--machine",
        grbl_sim,
    ]
    assert main(base) == 2
    assert "--profile" in capsys.readouterr().err
    assert main([*base, "--profile", "grbl-1.1"]) == 0


def test_the_configuration_doc_covers_every_key(repo: Path) -> None:
    """docs/configuration.md documents the whole markctl.toml schema: every key of the model."""
    from markctl.config import DefaultsSection, MachineEntry, RecordsSection

    text = (repo / "docs/configuration.md").read_text()
    for section, model in (
        ("records", RecordsSection),
        ("machines.NAME", MachineEntry),
        ("defaults", DefaultsSection),
    ):
        for key in model.model_fields:
            assert f"`{section}.{key}`" in text, f"{section}.{key} is not documented"
