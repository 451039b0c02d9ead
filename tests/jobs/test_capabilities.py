"""The pre-check knows the machine: what it cannot mark is refused before anything is cut."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from markctl.cli import main
from markctl.jobs.capabilities import machine_problems
from markctl.jobs.manifest import ManifestItem
from markctl.jobs.runner import prepare
from markctl.layouts import MarkRequest
from markctl.layouts.program import PatternField, PatternProgram
from markctl.profiles import FirmwareProfile, load_profile

LASER_EXAMPLE = Path(__file__).parents[2] / "examples" / "requests" / "iti-stockpile-datamatrix.toml"


@pytest.fixture
def telesis_example(tmp_path: Path) -> Path:
    """The stockpile example with its Data Matrix, sent to a Telesis-style marker instead of the laser."""
    path = tmp_path / "iti-stockpile-datamatrix-telesis.toml"
    path.write_text(LASER_EXAMPLE.read_text().replace('machine = "grbl-1.1"', 'machine = "telesis-tmp"'))
    return path


def capabilities(program: PatternProgram, profile_id: str, **dot_peen: object) -> list[str]:
    profile = load_profile(profile_id)
    if dot_peen:
        data = profile.model_dump()
        data["dot_peen"].update(dot_peen)
        profile = FirmwareProfile.model_validate(data)
    return [f"{p.capability}{'' if p.blocking else '?'}" for p in machine_problems(program, profile)]


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
        ("peen-modbus-coil", [field(font="7x9")], ["font", "placement?"]),
        ("peen-modbus", [field(height=25.0)], ["character-height"]),
        ("peen-modbus", [field("A" * 20, 10.0)], ["window"]),  # ~330 mm in a 120 mm window
        ("peen-modbus", [field(x=119.0)], ["window"]),
        ("peen-modbus", [field(y=3.0, angle_deg=270.0)], ["window"]),  # rotated to run below y = 0
        ("peen-modbus", [field(x=1.0 + i) for i in range(9)], ["fields"]),
        ("peen-modbus", [field("A" * 65, 1.0, 1.0, 1.0)], ["text-length"]),
        ("peen-modbus", [field(), field(height=4.0, y=20.0)], ["parameters"]),
        ("telesis-tmp", [field(y=5.0 + 2 * i, height=1.5) for i in range(9)], ["fields", "placement?"]),
        ("telesis-tmp", [field("B" * 70, 1.5, 1.0, 1.0)], ["window", "text-length", "placement?"]),
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
        .replace("origin_mm = [20, 20]", "origin_mm = [2, 2]")
    )
    catalogue = Catalogue.from_toml(parts + "datamatrix = true\nmodule_mm = 0.4\n", "parts.toml")
    manifest = parse_manifest((repo / "examples/stockpile/manifest.csv").read_bytes())
    telesis = precheck(manifest, catalogue, load_profile("telesis-tmp"))
    assert {v.verdict for v in telesis.verdicts} == {"invalid"}
    assert all("[machine:data-matrix]" in v.problems[0] for v in telesis.verdicts)
    laser = precheck(manifest, catalogue, load_profile("grbl-1.1"))
    assert {v.verdict for v in laser.verdicts} == {"ok"}
