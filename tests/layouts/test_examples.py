"""The examples/ folder agrees with the rules: every request checks clean, every manifest pre-checks clean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from markctl.cli import main
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import parse_manifest, read_manifest
from markctl.jobs.runner import precheck
from markctl.layouts import bundled_rules
from markctl.profiles import load_profile

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("path", sorted((EXAMPLES / "requests").glob("*.toml")), ids=lambda p: p.stem)
def test_example_request_is_compliant(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True


def test_example_exemption_is_honoured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "exemptions" / "iti-import-temporary.toml"
    assert main(["check", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["exempt"]
    assert [f["rule"] for f in report["findings"]] == ["ITI-8b-TEMP"]
    assert main(["layout", str(path), "--out", str(tmp_path / "never")]) == 2  # nothing is composed
    assert "exemption" in capsys.readouterr().err and not (tmp_path / "never").exists()


MANIFESTS = sorted(EXAMPLES.glob("*/manifest.csv"))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.parent.name)
def test_example_manifest_prechecks_clean_on_components_its_profile_marks(path: Path) -> None:
    manifest = read_manifest(path)
    assert manifest.ok, manifest.issues
    for item in manifest.items:
        assert item.component in bundled_rules().get(item.mark_profile).components(), item.item_key
    plan = precheck(manifest, Catalogue.load(path.parent / "parts.toml"), load_profile("grbl-1.1"))
    assert all(p.passed for p in plan.prepared), [(p.item.item_key, p.problems()) for p in plan.prepared]


def test_two_components_are_an_eu_mark_an_iti_import_mark_goes_on_the_frame_only() -> None:
    # README "Marking": components such as frame;slide are for EU marks (every essential component);
    # an ITI import mark goes on the frame or receiver, so its slide item is refused, naming the rule.
    manifest = read_manifest(EXAMPLES / "eu-import" / "manifest.csv")
    assert {(i.component, i.mark_profile) for i in manifest.items} >= {
        ("frame", "eu-import"),
        ("slide", "eu-import"),
    }
    iti = parse_manifest(
        b"serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark\n"
        b"Z123456,Zastava,M70,iti-import,frame;slide,KE,26,yes\n"
    )
    parts = Catalogue.load(EXAMPLES / "eu-import" / "parts.toml")
    verdicts = {
        p.item.component: p.problems() for p in precheck(iti, parts, load_profile("grbl-1.1")).prepared
    }
    assert verdicts["frame"] == []
    assert any(
        m.startswith("[ISACS-IMP] component.name: this mark belongs on another component")
        for m in verdicts["slide"]
    )
