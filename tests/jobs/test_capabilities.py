"""The pre-check knows the machine: what it cannot mark is refused before anything is cut."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from markctl.cli import main
from markctl.errors import LayoutError
from markctl.jobs.capabilities import machine_problems
from markctl.jobs.manifest import ManifestItem
from markctl.jobs.runner import prepare
from markctl.layouts import MarkRequest, compose
from markctl.layouts.program import PatternField, PatternProgram
from markctl.profiles import FirmwareProfile, load_profile

LASER_EXAMPLE = Path(__file__).parents[2] / "examples" / "requests" / "iti-stockpile-datamatrix.toml"


@pytest.fixture
def telesis_example(tmp_path: Path) -> Path:
    """The stockpile example with its Data Matrix, sent to a Telesis-style marker instead of the laser,
    on a surface where that marker's stored pattern (its fields at 5, 19 and 5, 14 mm) fits."""
    path = tmp_path / "iti-stockpile-datamatrix-telesis.toml"
    text = LASER_EXAMPLE.read_text().replace('machine = "grbl-1.1"', 'machine = "telesis-tmp"')
    text = text.replace("origin_mm = [5.0, 5.0]", "origin_mm = [0.0, 0.0]").replace(
        "[60, 14], [0, 14]", "[60, 25], [0, 25]"
    )
    path.write_text(text.replace("existing_marks = [[[0, 10], [25, 10], [25, 14], [0, 14]]]", ""))
    return path


def capabilities(program: PatternProgram, profile_id: str, **dot_peen: object) -> list[str]:
    profile = load_profile(profile_id)
    if dot_peen:
        data = profile.model_dump()
        data["dot_peen"].update(dot_peen)
        profile = FirmwareProfile.model_validate(data)
    named = [f"{p.capability}{'' if p.blocking else '?'}" for p in machine_problems(program, profile)]
    return list(dict.fromkeys(named))  # each capability once, in the order first named


def field(
    text: str = "A1", height: float = 3.0, x: float = 5.0, y: float = 5.0, **kw: object
) -> PatternField:
    return PatternField(text, height, x, y, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("profile_id", "fields", "expected"),
    [
        ("peen-modbus", [field()], []),
        (
            "peen-modbus",
            [field(), field("KE 26 0012345", 6.0, 30, 5, font="datamatrix")],
            ["data-matrix", "parameters"],
        ),
        ("peen-modbus-coil", [field(font="7x9")], ["font", "placement"]),
        ("peen-modbus", [field(height=25.0)], ["character-height"]),
        ("peen-modbus", [field("A" * 20, 10.0)], ["window"]),  # ~330 mm in a 120 mm window
        ("peen-modbus", [field(x=119.0)], ["window"]),
        ("peen-modbus", [field(y=3.0, angle_deg=270.0)], ["window"]),  # rotated to run below y = 0
        ("peen-modbus", [field(x=1.0 + i) for i in range(9)], ["fields"]),
        ("peen-modbus", [field("A" * 65, 1.0, 1.0, 1.0)], ["text-length"]),
        ("peen-modbus", [field(), field(height=4.0, y=20.0)], ["parameters"]),
        ("telesis-tmp", [field(y=5.0 + 2 * i) for i in range(9)], ["fields", "placement"]),
        (
            "telesis-tmp",
            [field("B" * 70, 1.5, 1.0, 1.0)],
            ["window", "text-length", "character-height", "placement"],
        ),
        ("telesis-tmp", [field(x=5.0, y=19.0), field(x=5.0, y=14.0)], []),  # its stored pattern's fields
    ],
)
def test_each_capability_is_named(profile_id: str, fields: list[PatternField], expected: list[str]) -> None:
    assert capabilities(PatternProgram("1", tuple(fields)), profile_id) == expected


def test_placement_is_the_patterns_when_the_profile_gives_its_origins() -> None:
    origins = ((2.0, 18.0), (2.0, 12.0))
    at_pattern = PatternProgram("1", (field(x=2.0, y=18.0), field(x=2.0, y=12.0)))
    elsewhere = PatternProgram("1", (field(x=5.0, y=5.0),))
    third = PatternProgram("1", (field(x=2.0, y=18.0), field(x=2.0, y=12.0), field(x=2.0, y=6.0)))
    assert capabilities(at_pattern, "telesis-tmp", pattern_origins=origins) == []
    assert capabilities(elsewhere, "telesis-tmp", pattern_origins=origins) == ["placement"]
    assert capabilities(third, "telesis-tmp", pattern_origins=origins) == ["placement"]


def test_check_refuses_the_datamatrix_example_on_the_telesis_profile(
    telesis_example: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", str(telesis_example)]) == 1
    out = capsys.readouterr().out
    assert "cannot: [machine:data-matrix] field 3: telesis-tmp cannot mark a Data Matrix" in out
    assert main(["check", str(telesis_example), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is True  # compliant as law goes: the machine is what cannot do it
    assert [p["capability"] for p in report["machine_problems"] if p["blocking"]] == ["data-matrix"]


def test_layout_refuses_it_too_and_still_writes_the_preview(
    telesis_example: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["layout", str(telesis_example), "--out", str(tmp_path)]) == 1
    assert "[machine:data-matrix]" in capsys.readouterr().out
    assert (tmp_path / "mark.svg").exists()


def test_without_the_code_the_same_request_passes(
    telesis_example: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = telesis_example.read_text().replace("datamatrix = true", "datamatrix = false")
    request = tmp_path / "no-code.toml"
    request.write_text(text)
    assert main(["check", str(request)]) == 0
    assert "cannot:" not in capsys.readouterr().out


def test_the_batch_precheck_refuses_it_before_any_machine_is_touched(telesis_example: Path) -> None:
    data = tomllib.loads(telesis_example.read_text())
    request = MarkRequest.parse(data)
    item = ManifestItem(2, "UG-0012345", "receiver", "iti-stockpile", {}, data["fields"])
    prepared = prepare(request, load_profile("telesis-tmp"), item)
    assert not prepared.passed and prepared.program is not None
    assert prepared.error is not None and "[machine:data-matrix]" in prepared.error
    assert prepared.problems() == [prepared.error]


def test_the_streaming_precheck_refuses_it_too(repo: Path) -> None:
    # The pre-check of a whole manifest judges items without ordering toolpaths; for a pattern
    # machine it still asks what the machine can do, so the refusal comes before the batch starts.
    from markctl.jobs.catalogue import Catalogue
    from markctl.jobs.manifest import parse_manifest
    from markctl.jobs.runner import precheck

    parts = (
        (repo / "examples/stockpile/parts.toml")
        .read_text()
        .replace("origin_mm = [20, 20]", "origin_mm = [2, 7]")
    )
    catalogue = Catalogue.from_toml(parts + "datamatrix = true\nmodule_mm = 0.4\n", "parts.toml")
    manifest = parse_manifest((repo / "examples/stockpile/manifest.csv").read_bytes())
    telesis = precheck(manifest, catalogue, load_profile("telesis-tmp"))
    assert {v.verdict for v in telesis.verdicts} == {"invalid"}
    assert all("[machine:data-matrix]" in v.problems[0] for v in telesis.verdicts)
    laser = precheck(manifest, catalogue, load_profile("grbl-1.1"))
    assert {v.verdict for v in laser.verdicts} == {"ok"}


# --- placement is the controller's: the layout is the pattern's -----------------------------------

PLATE = ["--profile", "iti-stockpile", "--field", "owner_country=KE", "--field", "agency=KDF",
         "--field", "year=26", "--field", "serial=GP-000417", "--component", "embedded-plate",
         "--material", "embedded-steel-plate", "--wall", "3", "--zone", "32x16"]  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "markctl", *args], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("machine", "origin", "fields"),
    [
        # Telesis: no position, height or force message; its pattern strikes 3 mm text at 25 %.
        ("telesis-tmp", "2,7", [(5.0, 19.0, 3.0), (5.0, 14.0, 3.0)]),
        # A Modbus map without origin registers: the pattern places, the host still sends the height.
        ("peen-modbus-coil", "2,10", [(4.0, 22.0, None), (4.0, 15.0, None)]),
    ],
)
def test_layout_and_check_show_the_layout_at_the_patterns_origins(
    tmp_path: Path, machine: str, origin: str, fields: list[tuple[float, float, float | None]]
) -> None:
    made = _cli(
        "layout", *PLATE, "--machine", machine, "--set", f"origin_mm={origin}", "--out", str(tmp_path)
    )
    assert made.returncode == 0, made.stdout + made.stderr
    program = json.loads((tmp_path / "mark.program.json").read_text())
    placed = [(f["x_mm"], f["y_mm"]) for f in program["fields"]]
    assert placed == [(x, y) for x, y, _ in fields]
    spec = load_profile(machine).dot_peen
    assert spec is not None and placed == [tuple(o) for o in spec.pattern_origins[: len(placed)]]
    for f, (_, _, height) in zip(program["fields"], fields, strict=True):
        assert height is None or f["height_mm"] == height
    checked = _cli("check", *PLATE, "--machine", machine, "--set", f"origin_mm={origin}", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["passed"] and report["machine_problems"] == []


def test_a_pattern_line_into_a_keepout_is_refused_naming_field_origin_and_key() -> None:
    # A keep-out over the pattern's field 2 (5, 14 mm in the machine frame: 3, 7 on the plate).
    refused = _cli("check", *PLATE, "--machine", "telesis-tmp", "--set", "origin_mm=2,7",
                   "--keepout", "10,6 14,6 14,9 10,9")  # fmt: skip
    assert refused.returncode == 2
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "telesis-tmp's stored pattern strikes field 2 (fields.serial) at (5, 14) mm" in line
    assert "([dot_peen] pattern_origins[1])" in line and "keep-out 1" in line
    assert "change the pattern on the controller" in line


def test_a_profile_that_does_not_say_where_its_pattern_puts_fields_is_refused() -> None:
    data = load_profile("peen-modbus-coil").model_dump()
    data["dot_peen"]["pattern_origins"] = []
    bare = FirmwareProfile.model_validate(data)
    request = MarkRequest.parse(
        {"profile": "iti-stockpile", "machine": "peen-modbus-coil", "fields": {"owner_country": "KE",
         "agency": "KDF", "year": "26", "serial": "GP-1"}, "component": {"name": "embedded-plate",
         "material": "embedded-steel-plate", "wall_thickness_mm": 3.0, "zone": [[0, 0], [32, 0], [32, 16], [0, 16]]},
         "options": {"origin_mm": [2, 7]}}
    )  # fmt: skip
    item = ManifestItem(2, "KE-GP-1", "embedded-plate", "iti-stockpile", {}, {})
    prepared = prepare(request, bare, item)
    assert prepared.error is not None and len(prepared.error.splitlines()) == 1
    assert "gives no [dot_peen] pattern_origins: add them" in prepared.error
    program = PatternProgram("1", (field(),))
    assert capabilities(program, "peen-modbus-coil", pattern_origins=()) == ["placement"]


def test_the_batch_and_service_prechecks_compose_the_same_pattern_layout(repo: Path) -> None:
    # One code path: runner.judge (the streaming pre-check of `markctl batch` and of the service) and
    # runner.prepare (the item as it is marked) both compose at the pattern's origins.
    from markctl.jobs.catalogue import Catalogue
    from markctl.jobs.manifest import parse_manifest
    from markctl.jobs.runner import judge, request_for

    manifest = parse_manifest((repo / "examples/stockpile/manifest.csv").read_bytes())
    telesis = load_profile("telesis-tmp")
    for y, ok in ((7, True), (2, False)):
        parts = (repo / "examples/stockpile/parts.toml").read_text().replace("[20, 20]", f"[2, {y}]")
        # telesis-tmp strikes with its pattern's force (about 0.24 mm in this plate): too deep for a
        # 2 mm wall (ENG-WALL), so the plate under it is 3 mm.
        parts = parts.replace("wall_thickness_mm = 2.0", "wall_thickness_mm = 3.0")
        catalogue = Catalogue.from_toml(parts, "parts.toml")
        item = manifest.items[0]
        verdict = judge(item, catalogue, telesis)
        prepared = prepare(request_for(item, catalogue, telesis), telesis, item)
        assert verdict.passed is ok and prepared.passed is ok
        if ok:
            assert isinstance(prepared.program, PatternProgram)
            assert [(f.x_mm, f.y_mm) for f in prepared.program.fields] == [(5.0, 19.0), (5.0, 14.0)]
        else:
            assert list(verdict.problems) == prepared.problems()
            assert "([dot_peen] pattern_origins[0])" in verdict.problems[0]


def test_pattern_fields_that_would_overlap_at_the_asked_height_are_refused() -> None:
    # peen-modbus-coil takes a height from the host, but its pattern's fields are 7 mm apart.
    request = MarkRequest.parse(
        {"profile": "iti-stockpile", "machine": "peen-modbus-coil", "fields": {"owner_country": "KE",
         "agency": "KDF", "year": "26", "serial": "GP-1"}, "component": {"name": "embedded-plate",
         "material": "embedded-steel-plate", "wall_thickness_mm": 3.0, "zone": [[0, 0], [70, 0], [70, 30], [0, 30]]},
         "options": {"origin_mm": [0, 0], "char_height_mm": 8.0}}
    )  # fmt: skip
    with pytest.raises(LayoutError) as info:
        compose(request)
    assert info.value.field == "options.char_height_mm"
    assert (
        "field 1 (fields.owner_country, fields.agency, fields.year) and field 2 (fields.serial) 7 mm apart"
        in str(info.value)
    )
    assert "at 8 mm they overlap" in str(info.value)
