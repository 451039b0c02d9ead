"""From outside: `markctl profiles rules`, `markctl check`, and a batch whose rows have several bad fields."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from markctl.cli import main
from markctl.jobs.manifest import parse_manifest
from markctl.layouts import bundled_rules

PARTS = """
[parts.frame]
material = "steel"
wall_thickness_mm = 3.0
zone = [[0, 0], [40, 0], [40, 16], [0, 16]]
[parts.frame.options]
origin_mm = [10, 10]
"""


def test_rules_lists_every_profile_with_its_components(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "rules", "--json"]) == 0
    listed = {d["id"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(listed) == set(bundled_rules().ids)
    assert listed["iti-import"]["components"] == ["frame", "receiver", "embedded-plate"]
    assert "slide" in listed["eu-import"]["components"]


def test_rules_of_one_profile_name_fields_columns_and_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "rules", "iti-import", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    fields = {f["name"]: f for f in d["fields"]}
    assert fields["import_country"]["need"] == "required"
    assert fields["serial"]["need"] == "required unless has_unique_mark"
    assert fields["import_year"]["year_of"] == "import" and fields["import_year"]["example"] == "26"
    assert {"import_country", "import_year", "has_unique_mark", "components"} <= set(d["manifest_columns"])
    kinds = {r["rule"]: r["kind"] for r in d["rules"]}
    assert kinds["ITI-8b"] == "instrument" and kinds["PRAC-HEIGHT"] == "practice"
    assert main(["profiles", "rules", "ca-import"]) == 0
    text = capsys.readouterr().out
    for words in ("CA-PHYS", "surface", "s.4(2)", "import_year", "has_unique_mark", "2025-12-01", "law"):
        assert words in text, words


def test_unknown_rule_profile_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "rules", "xx-import"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and "xx-import" in err and "iti-import" in err and "Traceback" not in err
    )


def test_check_prints_every_field_error_at_once(
    tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = (repo / "examples" / "requests" / "ca-import.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(
        request.replace('country = "CA"', 'country = "CAN"').replace(
            'import_year = "26"', 'import_year = "2O"'
        )
    )
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "fields.country" in err and "fields.import_year" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2


def test_check_shows_the_kind_of_each_rule(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(repo / "examples" / "requests" / "ca-import.toml"), "--json"]) == 0
    findings = json.loads(capsys.readouterr().out)["findings"]
    height = next(f for f in findings if f["rule"] == "CA-PHYS" and f["subject"].startswith("line"))
    assert height["kind"] == "law" and "SOR/2004-275" in height["source"]
    assert "surface" in height["measured"]


def test_maybe_is_not_no(capsys: pytest.CaptureFixture[str]) -> None:
    manifest = parse_manifest(
        b"serial,manufacturer,mark_profile,components,import_country,import_year,has_unique_mark\n"
        b"P1,Beretta,iti-import,frame,KE,26,maybe\n"
        b"P2,Beretta,iti-import,frame,KE,26,No\n"
    )
    assert [str(i) for i in manifest.issues] == [
        "line 2: has_unique_mark: 'maybe' is not yes or no (use yes/no, true/false, 1/0)"
    ]
    assert {i.line for i in manifest.items} == {2, 3}  # line 2 is still pre-checked for its other fields


@pytest.fixture
def depot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_registry: Callable[..., Path]) -> Path:
    monkeypatch.chdir(tmp_path)
    new_registry(tmp_path / "records.db")  # a training registry: the depot's machine is a simulator
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "markctl.toml").write_text(
        '[records]\nurl = "records.db"\n[machines.peen]\naddress = "sim://peen-modbus?clock=instant"\n'
        '[defaults]\nmachine = "peen"\noperator = "depot-3"\n'
    )
    (tmp_path / "parts.toml").write_text(PARTS)
    return tmp_path


def test_batch_reports_every_bad_field_of_a_row_naming_line_and_column(
    depot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (depot / "manifest.csv").write_text(
        "serial,manufacturer,model,mark_profile,components,maker,country,year,has_unique_mark\n"
        "NW1,Nordwaffen,P9,eu-import,frame,,,2026,maybe\n"
        "NW2,Nordwaffen,P9,eu-import,frame,NORDWAFFEN,AT,2026,yes\n"
    )
    assert main(["batch", "manifest.csv", "--parts", "parts.toml", "--json"]) == 1
    job = json.loads(capsys.readouterr().out)
    problems = [p for row in job["rows"] if row["line"] == 2 for p in row["problems"]]
    assert any(p.startswith("has_unique_mark: 'maybe'") for p in problems)
    assert any(p.startswith("column maker: [EU-CONT]") for p in problems)
    assert any(p.startswith("column country: [EU-CONT]") for p in problems)
    assert not job.get("results")  # nothing marked while a row is bad


def test_user_profile_of_the_docs_explains_its_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "rule-profiles.md").read_text()
    toml = docs.split("```toml\nschema_version")[1].split("```")[0]
    (tmp_path / "xx.toml").write_text("schema_version" + toml)
    assert main(["profiles", "rules", "xx-import", "--rules", str(tmp_path / "xx.toml"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"rule": "XX-7", "kind": "law", "document": "Republic of X, Firearms Regulation 2024, s.7(2)",
            "text": "Paraphrase: import marks at least 2.5 mm high, measured at the surface."} in d["rules"]  # fmt: skip
    assert [lim["measured_at"] for lim in d["limits"] if lim["rule"] == "XX-7"] == ["surface"]
