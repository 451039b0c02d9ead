"""Bad input gets a clear error naming the field, and nothing half-made; exit 2 on the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markctl.errors import ComplianceError, LayoutError
from markctl.layouts import MarkRequest, compose, request_from_flags

from .conftest import request, request_dict


def _compose(data: dict[str, Any]) -> None:
    compose(MarkRequest.parse(data))


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda d: d.update(profile="xx-nope"), "profile", "unknown rule profile"),
        (lambda d: d.update(machine="grbl-9"), "machine", "no profile"),
        (lambda d: d["fields"].update(colour="RED"), "fields.colour", "unknown field"),
        (lambda d: d.update(facts={"is_blue": True}), "facts.is_blue", "unknown fact"),
        (lambda d: d["component"].update(material="cheese"), "component.material", "unknown material"),
        (
            lambda d: d["component"].update(wall_thickness_mm=0),
            "component.wall_thickness_mm",
            "greater than 0",
        ),
        (
            lambda d: d["component"].update(wall_thickness_mm=-2),
            "component.wall_thickness_mm",
            "greater than 0",
        ),
        (lambda d: d["component"].update(wall_thickness_mm=5000), "component.wall_thickness_mm", "less than"),
        (lambda d: d["options"].update(char_height_mm=-1), "options.char_height_mm", "greater than 0"),
        (lambda d: d["options"].update(char_height_mm=500), "options.char_height_mm", "less than"),
        (lambda d: d["options"].update(font="comic"), "options.font", "unknown font"),
        (
            lambda d: d["component"].update(zone=[[0, 0], [10, 10], [10, 0], [0, 10]]),
            "component.zone",
            "Self-intersection",
        ),
        (lambda d: d["component"].update(zone=[[0, 0], [1, 1]]), "component.zone", "at least 3 points"),
        (lambda d: d["component"].update(zone=[[0, 0], [9000, 0], [0, 10]]), "component.zone", "beyond"),
        (lambda d: d["component"].update(name="stock"), "component.name", "Input should be"),
        (lambda d: d.update(colour="red"), "colour", "unknown key"),
        (lambda d: d["options"].update(process="plasma"), "options.process", "no diode laser mode"),
        (
            lambda d: d["component"].update(zone=[[0, 0], [4, 0], [4, 3], [0, 3]]),
            "component.zone",
            "clear area of at least",
        ),
    ],
)
def test_bad_input_names_field(mutate: Any, field: str, words: str) -> None:
    data = request_dict("iti-import")
    mutate(data)
    with pytest.raises(LayoutError) as info:
        _compose(data)
    assert info.value.field == field
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("fields", "field", "rule", "words"),
    [
        ({"import_country": None}, "fields.import_country", "ITI-8b", "required"),
        ({"import_country": "XK"}, "fields.import_country", "ITI-8b", "not an ISO 3166-1"),
        ({"import_country": "UGA"}, "fields.import_country", "ITI-8b", "not an ISO 3166-1"),
        ({"import_year": "27"}, "fields.import_year", "ITI-8b", "in the future"),
        ({"import_year": "2031"}, "fields.import_year", "ITI-8b", "in the future"),
        ({"import_year": "26A"}, "fields.import_year", "ITI-8b", "not a year"),
        ({"import_year": "1066"}, "fields.import_year", "ITI-8b", "implausible"),
        ({"serial": "AB_12"}, "fields.serial", "ITI-7", "character set"),
        ({"serial": "Ж12345"}, "fields.serial", "ITI-7", "character set"),
        ({"serial": "A" * 21}, "fields.serial", "ISACS-IMP", "too long"),
    ],
)
def test_content_errors_name_field_and_rule(
    fields: dict[str, str | None], field: str, rule: str, words: str
) -> None:
    data = request_dict("iti-import")
    for k, v in fields.items():
        if v is None:
            data["fields"].pop(k)
        else:
            data["fields"][k] = v
    with pytest.raises(ComplianceError) as info:
        _compose(data)
    assert (info.value.field, info.value.rule) == (field, rule)
    assert words in str(info.value)


def test_kosovo_is_not_in_iso_3166_1_but_uganda_is() -> None:
    # The list is pycountry's ISO 3166-1 data, not a hand-typed one: XK is a user-assigned code.
    compose(request("iti-import"))
    with pytest.raises(ComplianceError):
        compose(request("iti-import", fields={"import_country": "XK", "import_year": "26"}))


def test_too_small_zone_error_names_smallest_height_that_fits() -> None:
    # 3 mm text does not fit a 2.8 mm tall zone, but the legal minimum does: the error says so.
    data = request_dict("iti-import")
    data["component"].update(zone=[[0, 0], [30, 0], [30, 2.8], [0, 2.8]], existing_marks=[])
    data["options"]["char_height_mm"] = 3.0
    with pytest.raises(LayoutError) as info:
        _compose(data)
    assert info.value.field == "options.char_height_mm"
    assert "largest height that fits" in str(info.value)
    fits = float(str(info.value).split("largest height that fits is ")[1].split(" mm")[0])
    data["options"]["char_height_mm"] = fits
    _compose(data)


def test_flags_build_the_same_request_as_a_file() -> None:
    req = request_from_flags(
        profile="iti-import",
        machine="grbl-1.1",
        fields=["import_country=UG", "import_year=26"],
        component="receiver",
        material="steel",
        wall_thickness_mm=3.0,
        zone="60x20",
        existing=["0,16 25,16 25,20 0,20"],
        options={"today": "2026-11-27", "font": None},
    )
    assert req == request("iti-import")
    with pytest.raises(LayoutError) as info:
        request_from_flags(
            profile="iti-import",
            machine="grbl-1.1",
            fields=["import_country"],
            component="frame",
            material="steel",
            wall_thickness_mm=3,
            zone="10x10",
        )
    assert info.value.field == "fields"


def test_toml_and_json_errors_name_request() -> None:
    with pytest.raises(LayoutError) as info:
        MarkRequest.from_toml("profile = ")
    assert info.value.field == "request"
    with pytest.raises(LayoutError) as info:
        MarkRequest.from_json("[1, 2]")
    assert info.value.field == "request"


def test_cli_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from markctl.cli import main

    bad = tmp_path / "bad.toml"
    text = (Path(__file__).parents[2] / "examples/requests/iti-import-steel-frame.toml").read_text()
    bad.write_text(text.replace('import_country = "UG"', 'import_country = "ZZ"'))
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "fields.import_country" in err and "ITI-8b" in err
    assert main(["check", str(bad), "--zone", "0,0 10,10 10,0 0,10"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "component.zone" in err and "Self-intersection" in err
    assert main(["layout", "--profile", "iti-import", "--machine", "grbl-1.1"]) == 2
    assert "request" in capsys.readouterr().err


def test_cli_check_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from markctl.cli import main

    example = str(Path(__file__).parents[2] / "examples/requests/ca-import.toml")
    assert main(["check", example]) == 0
    assert "compliant" in capsys.readouterr().out
    assert main(["check", example, "--height", "1.2"]) == 1
    assert "CA-PHYS" in capsys.readouterr().out
    assert main(["check", example, "--set", "char_height_mm=1.2"]) == 1  # --set reaches every option
    assert "CA-PHYS" in capsys.readouterr().out
    assert main(["check", example, "--set", "char_height_mm=1.2", "--height", "2"]) == 0  # a flag wins
    assert main(["check", example, "--set", "passes=1", "--json"]) == 1
    assert '"rule": "CA-PHYS"' in capsys.readouterr().out
    assert main(["check", example, "--set", "pases=1"]) == 2
    assert "options.pases" in capsys.readouterr().err


def test_json_and_toml_forms_give_the_same_request() -> None:
    import json

    data = request_dict("iti-stockpile")
    from_json = MarkRequest.from_json(json.dumps(data))
    assert from_json == request("iti-stockpile")
    toml = (
        'profile = "iti-stockpile"\nmachine = "grbl-1.1"\n'
        '[fields]\nowner_country = "UG"\nagency = "UPF"\nserial = "0012345"\nyear = "26"\n'
        '[component]\nname = "receiver"\nmaterial = "steel"\nwall_thickness_mm = 3.0\n'
        "zone = [[0, 0], [60, 0], [60, 20], [0, 20]]\n"
        "existing_marks = [[[0, 16], [25, 16], [25, 20], [0, 20]]]\n"
        '[options]\ntoday = "2026-11-27"\n'
    )
    assert MarkRequest.from_toml(toml) == from_json


_ALLOWED = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet=_ALLOWED + "abz_#.Ж ", min_size=1, max_size=24))
def test_serial_is_accepted_exactly_when_charset_and_length_allow(serial: str) -> None:
    data = request_dict("iti-stockpile")
    data["fields"]["serial"] = serial
    value = serial.strip()
    ok = bool(value) and len(value) <= 20 and all(ch in _ALLOWED for ch in value)
    try:
        layout = compose(MarkRequest.parse(data))
    except ComplianceError as exc:
        assert not ok, exc
        assert exc.field == "fields.serial"
        assert exc.rule in ("ITI-7", "ITI-8d")  # charset (ITI-7 default) or the field's own rule
        return
    assert ok
    assert layout.values["serial"] == value
