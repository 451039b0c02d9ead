"""Firmware profiles: every bundled one validates; a broken one is refused naming file, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from markctl import profiles as prof
from markctl.errors import ProfileError

BUNDLED = [info.id for info in prof.list_profiles()]

MINIMAL_PEEN = """
schema_version = 1
id = "{id}"
name = "test marker"
[machine]
kind = "dot-peen"
work_area_x_mm = 50
work_area_y_mm = 20
max_feed_mm_min = 1000
max_accel_mm_s2 = 100
[dot_peen]
force_min_n = 10
force_max_n = 100
dot_rate_hz = 50
chars_per_s = 2
[protocol]
kind = "telesis"
bcc = "xor"
bcc_encoding = "hex"
bcc_span = "stx-to-etx"
[protocol.fault_codes]
1 = "E-stop"
"""


def test_every_kind_of_machine_ships() -> None:
    assert {"grbl-1.1", "grblhal", "fluidnc", "telesis-tmp", "peen-modbus"} <= set(BUNDLED)


@pytest.mark.parametrize("profile_id", BUNDLED)
def test_bundled_profile_validates(profile_id: str) -> None:
    profile = prof.load_profile(profile_id)
    assert profile.id == profile_id
    assert profile.machine.work_area_x_mm > 0
    if profile.machine.kind is prof.MachineKind.LASER:
        assert profile.laser is not None
    else:
        assert profile.dot_peen is not None and profile.dot_peen.chars_per_s > 0
    assert profile.provenance.sources, "every profile says where its facts come from"


def test_grbl_reference_facts() -> None:
    grbl = prof.load_profile("grbl-1.1").protocol
    assert isinstance(grbl, prof.GrblProtocol)
    assert (grbl.rx_buffer_bytes, grbl.planner_blocks, grbl.line_buffer_chars) == (128, 15, 80)
    assert grbl.settings[30] == 1000 and grbl.settings[31] == 0 and grbl.settings[32] == 1
    assert grbl.errors[9].startswith("G-code commands are locked out")
    assert grbl.alarms[3].startswith("Reset while in motion")
    assert set(range(1, 18)) <= set(grbl.errors) and set(range(20, 39)) <= set(grbl.errors)


def test_extends_merges_tables_and_keeps_parent_codes() -> None:
    hal = prof.load_profile("grblhal")
    assert hal.extends == "grbl-1.1"
    assert isinstance(hal.protocol, prof.GrblProtocol)
    assert hal.protocol.rx_buffer_bytes == 1024
    assert hal.protocol.errors[9] == prof.load_profile("grbl-1.1").protocol.errors[9]  # type: ignore[union-attr]
    assert hal.protocol.alarms[22] == "Buffer overflow" and 3 in hal.protocol.alarms
    assert hal.protocol.settings[110] == 10000 and hal.protocol.settings[30] == 1000
    assert hal.machine.work_area_x_mm == 400.0  # inherited
    assert hal.provenance.sources[0].startswith("grblHAL")  # its own provenance, not the parent's


@pytest.mark.parametrize(
    ("dialect", "banner"),
    [
        ("grbl-1.1", "Grbl 1.1h ['$' for help]"),
        ("grblhal", "GrblHAL 1.1f ['$' or '$HELP' for help]"),
        ("fluidnc", "Grbl 3.9 [FluidNC v3.9.5 (esp32-wifi) '$' for help]"),
    ],
)
def test_banner_regexes_tell_dialects_apart(dialect: str, banner: str) -> None:
    import re

    matches = []
    for pid in ("grbl-1.1", "grblhal", "fluidnc"):
        proto = prof.load_profile(pid).protocol
        assert isinstance(proto, prof.GrblProtocol)
        if re.search(proto.banner_regex, banner):
            matches.append(pid)
    assert matches == [dialect]


def test_modbus_map_is_the_documented_one() -> None:
    proto = prof.load_profile("peen-modbus").protocol
    assert isinstance(proto, prof.ModbusProtocol)
    regs = proto.registers
    assert (regs.command, regs.pattern, regs.status, regs.fault_code, regs.progress_pct) == (0, 1, 2, 3, 4)
    assert (regs.text_start, regs.text_registers) == (10, 32)
    assert regs.commands == {"start": 1, "abort": 2, "reset_fault": 3, "load_pattern": 4}


def test_schema_json_is_committed_and_current(repo: Path) -> None:
    committed = (repo / "firmware_profiles" / "schema.json").read_text("utf-8")
    assert committed == prof.json_schema(), "run `make schema` and commit firmware_profiles/schema.json"


# --- broken profiles --------------------------------------------------------------------------


def _write(tmp_path: Path, pid: str, text: str) -> Path:
    path = tmp_path / f"{pid}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_user_profile_validates(tmp_path: Path) -> None:
    profile = prof.load_profile_file(_write(tmp_path, "mini", MINIMAL_PEEN.format(id="mini")))
    assert profile.protocol.kind == "telesis"


@pytest.mark.parametrize(
    ("mutation", "loc", "reason"),
    [
        (("work_area_x_mm = 50", "work_area_x_mm = -5"), "machine.work_area_x_mm", "greater than 0"),
        (("work_area_x_mm = 50", "work_area_x_mm = 'wide'"), "machine.work_area_x_mm", "valid number"),
        (("chars_per_s = 2", "chars_per_s = 2\nchar_per_s = 3"), "dot_peen.char_per_s", "Extra inputs"),
        (('bcc = "xor"', 'bcc = "crc"'), "protocol.telesis.bcc", "'xor' or 'sum'"),
        (('kind = "telesis"', 'kind = "morse"'), "protocol", "does not match any of the expected tags"),
        (("force_max_n = 100", "force_max_n = 5"), "dot_peen", "force_min_n exceeds force_max_n"),
        (('kind = "dot-peen"', 'kind = "laser"'), "", "a laser machine needs a [laser] table"),
        (("schema_version = 1", "schema_version = 2"), "schema_version", "not supported"),
    ],
)
def test_broken_profile_names_file_key_and_reason(
    tmp_path: Path, mutation: tuple[str, str], loc: str, reason: str
) -> None:
    text = MINIMAL_PEEN.format(id="broken").replace(*mutation, 1)
    path = _write(tmp_path, "broken", text)
    with pytest.raises(ProfileError) as info:
        prof.load_profile_file(path)
    err = info.value
    assert err.path == str(path)
    assert err.loc == loc
    assert reason in str(err)
    assert str(path) in str(err)


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad", "schema_version = 1\nid = 'bad' x\n")
    with pytest.raises(ProfileError, match=r"bad\.toml: not valid TOML: .*line 2"):
        prof.load_profile_file(path)


def test_id_must_match_file_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "one", MINIMAL_PEEN.format(id="two"))
    with pytest.raises(ProfileError) as info:
        prof.load_profile_file(path)
    assert info.value.loc == "id"


def test_user_profile_extends_bundled_and_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(
        tmp_path,
        "my-grbl",
        'schema_version = 1\nid = "my-grbl"\nextends = "grbl-1.1"\nname = "bench engraver"\n'
        "[machine]\nwork_area_x_mm = 200\n[protocol.settings]\n30 = 255\n",
    )
    monkeypatch.setenv(prof.ENV_PROFILE_PATH, str(tmp_path))
    profile = prof.load_profile("my-grbl")
    assert profile.machine.work_area_x_mm == 200 and profile.machine.work_area_y_mm == 400
    assert isinstance(profile.protocol, prof.GrblProtocol) and profile.protocol.settings[30] == 255
    assert "my-grbl" in [i.id for i in prof.list_profiles()]


def test_extends_unknown_and_cycles_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = MINIMAL_PEEN.format(id="a")
    _write(tmp_path, "a", base.replace('name = "test marker"', 'name = "a"\nextends = "b"'))
    _write(tmp_path, "b", 'schema_version = 1\nid = "b"\nextends = "a"\nname = "b"\n')
    monkeypatch.setenv(prof.ENV_PROFILE_PATH, str(tmp_path))
    with pytest.raises(ProfileError, match="cycle: a -> b -> a") as info:
        prof.load_profile("a")
    assert info.value.loc == "extends"
    with pytest.raises(ProfileError, match="unknown profile 'nope'.*known:"):
        prof.load_profile_file(
            _write(tmp_path / "..", "c", 'schema_version = 1\nid = "c"\nextends = "nope"\n')
        )


def test_duplicate_id_is_refused_not_shadowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "grbl-1.1", MINIMAL_PEEN.format(id="grbl-1.1"))
    monkeypatch.setenv(prof.ENV_PROFILE_PATH, str(tmp_path))
    with pytest.raises(ProfileError, match="defined twice"):
        prof.load_profile("grbl-1.1")


def test_unknown_profile_lists_known() -> None:
    with pytest.raises(ProfileError, match="no profile with id 'grbl-9'.*known: .*grbl-1.1"):
        prof.load_profile("grbl-9")
