"""Temporary-import exemptions (ITI 8(b), ISSUE 15) through the CLI as a user runs it (subprocesses).

A manifest mixing marked and exempt rows: the exempt weapon is recorded ``exempt`` with purpose,
re-export date, supervisor and reference, and nothing is cut for it; a re-run skips both; the
register, the export and ``records show`` say "not marked"; marking the weapon later is refused until
a supervisor ends the exemption; a passed re-export date is a warning naming the weapon.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest

from markctl.records import RecordStore, item_key_of

pytestmark = pytest.mark.slow

SOON = (date.today() + timedelta(days=120)).isoformat()
HEADER = ("serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark,"
          "exemption,exemption_purpose,exemption_re_export_by,exemption_reference\n")  # fmt: skip
MIXED = (
    "M1,Beretta,92FS,iti-import,frame,KE,26,yes,,,,\n"
    f"T1,Beretta,92FS,iti-import,frame,KE,26,yes,temporary-import,shooting competition Nairobi Open,{SOON},KE-TI-42\n"
)
MARKED = item_key_of("BERETTA|M1", "frame", "iti-import")
EXEMPT = item_key_of("BERETTA|T1", "frame", "iti-import")


@pytest.fixture
def work(tmp_path: Path, repo: Path, new_registry: Callable[..., Path]) -> Path:
    (tmp_path / "parts.toml").write_text((repo / "examples/import/parts.toml").read_text())
    new_registry(tmp_path / "records.db")
    return tmp_path


def _markctl(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(work / "xdg"), "MARKCTL_RECORDS": str(work / "records.db"),
           "MARKCTL_OPERATOR": "armourer-7", "COLUMNS": "250"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "markctl", *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _batch(work: Path, rows: str, *extra: str) -> subprocess.CompletedProcess[str]:
    (work / "manifest.csv").write_text(HEADER + rows)
    return _markctl(work, "batch", "manifest.csv", "--parts", "parts.toml", "--machine",
                    "sim://grbl-1.1?clock=instant", "--yes", "--json", "--out", "out", *extra)  # fmt: skip


def _events(work: Path, key: str) -> list[str]:
    with RecordStore.open(work / "records.db") as store:
        return [r.event for r in store.history(key)]


def test_batch_records_exempt_rows_and_cuts_only_the_others(work: Path) -> None:
    # Exempt rows need the supervisor who records them: refused before anything is written.
    refused = _batch(work, MIXED)
    assert refused.returncode == 2 and "line(s) 3" in refused.stderr and "--override-by" in refused.stderr
    assert _events(work, MARKED) == [] and _events(work, EXEMPT) == []

    run = _batch(work, MIXED, "--override-by", "supervisor-ana")
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout)
    assert job["counts"] == {"marked": 1, "exempt": 1}
    assert _events(work, MARKED) == ["planned", "started", "marked"]
    assert _events(work, EXEMPT) == ["planned", "exempted"]  # never started: nothing was cut
    with RecordStore.open(work / "records.db") as store:
        exempted = store.history(EXEMPT)[-1]
    assert exempted.state == "exempt" and exempted.actor == "armourer-7"
    assert exempted.data["exemption"] == {"kind": "temporary-import", "purpose": "shooting competition Nairobi Open",
                                          "re_export_by": SOON, "recorded_by": "supervisor-ana",
                                          "reference": "KE-TI-42"}  # fmt: skip
    assert [f["rule"] for f in exempted.data["findings"]] == ["ITI-8b-TEMP"]
    # The simulator's workpiece images: one for the marked weapon, none for the exempt one.
    assert sorted(p.name for p in (work / "out").glob("**/*.png")) == ["BERETTA_M1_frame_iti-import.png"]

    # A re-run skips both, like marked ones.
    again = _batch(work, MIXED, "--override-by", "supervisor-ana")
    assert again.returncode == 0 and json.loads(again.stdout)["counts"] == {"skipped": 2}
    assert _events(work, EXEMPT) == ["planned", "exempted"]

    # The summary table counts it (without --json).
    table = _markctl(work, "batch", "manifest.csv", "--parts", "parts.toml", "--machine",
                     "sim://grbl-1.1?clock=instant", "--yes", "--override-by", "supervisor-ana")  # fmt: skip
    assert "1 item(s) recorded exempt, not marked" in table.stdout and "summary: skipped 2" in table.stdout

    # The register, the export and records show say what happened to the weapon.
    show = _markctl(work, "records", "show", "t1")
    assert show.returncode == 0
    assert "frame / iti-import: exempt" in show.stdout and "NOT MARKED" in show.stdout
    assert f"re-export by: {SOON}" in show.stdout and "supervisor:   supervisor-ana" in show.stdout
    assert "KE-TI-42" in show.stdout and "warning" not in show.stderr
    listed = json.loads(_markctl(work, "records", "list", "--state", "exempt", "--json").stdout)
    assert [i["item_key"] for i in listed] == [EXEMPT]
    register = _markctl(work, "records", "register", "--format", "csv").stdout
    rows = {r["serial"]: r for r in csv.DictReader(io.StringIO(register))}
    assert rows["T1"]["state"] == "exempt" and rows["T1"]["mark_text"].startswith("NOT MARKED: exempt")
    assert (
        rows["T1"]["machine"] == "" and rows["M1"]["state"] == "marked" and rows["M1"]["mark_text"] == "KE 26"
    )
    pdf = _markctl(work, "records", "register", "--format", "pdf", "-o", "register.pdf")
    assert pdf.returncode == 0 and (work / "register.pdf").read_bytes().startswith(b"%PDF")
    exported = json.loads(_markctl(work, "records", "export", "--format", "json").stdout)
    assert [r["event"] for r in exported if r["item_key"] == EXEMPT] == ["planned", "exempted"]
    jobs = _markctl(work, "jobs", "--json")
    assert sum(per.get("exempt", 0) for per in json.loads(jobs.stdout).values()) == 1
    verify = _markctl(work, "records", "verify")
    assert verify.returncode == 0 and "intact" in verify.stdout and "warning" not in verify.stderr


def test_marking_an_exempt_weapon_later_is_an_explicit_recorded_act(work: Path) -> None:
    assert _batch(work, MIXED, "--override-by", "supervisor-ana").returncode == 0
    # The weapon stays and needs its import mark: a plain row for it is refused, naming the step.
    plain = MIXED.replace(f"temporary-import,shooting competition Nairobi Open,{SOON},KE-TI-42", ",,,")
    refused = _batch(work, plain)
    assert refused.returncode == 1
    assert "recorded exempt" in refused.stderr and "markctl items end-exemption" in refused.stderr
    assert _events(work, EXEMPT) == ["planned", "exempted"]
    # A supervisor ends the exemption, with a reason; then the batch marks it.
    ended = _markctl(work, "items", "end-exemption", EXEMPT, "--reason", "the weapon stays: sold to a dealer",
                     "--supervisor", "ana")  # fmt: skip
    assert ended.returncode == 0, ended.stderr
    marked = _batch(work, plain)
    assert marked.returncode == 0 and json.loads(marked.stdout)["counts"] == {"marked": 1, "skipped": 1}
    assert _events(work, EXEMPT) == ["planned", "exempted", "exemption-ended", "started", "marked"]
    with RecordStore.open(work / "records.db") as store:
        ending = store.history(EXEMPT)[2]
    assert ending.actor == "supervisor:ana" and ending.data["reason"] == "the weapon stays: sold to a dealer"
    register = _markctl(work, "records", "register").stdout
    assert "exemption ended" not in register and "KE 26" in register  # the register shows the mark now


def test_a_passed_re_export_date_is_a_warning_naming_the_weapon(work: Path, repo: Path) -> None:
    # An exemption recorded months ago whose re-export date has passed since.
    past = (date.today() - timedelta(days=5)).isoformat()
    weapon = "GLOCK|LATE-7"
    key = item_key_of(weapon, "frame", "iti-import")
    with RecordStore.open(work / "records.db") as store:
        store.append(key, "planned", "op", {"identity": {"serial": "LATE-7"}}, weapon_key=weapon,
                     component="frame", mark_profile="iti-import")  # fmt: skip
        store.append(key, "exempted", "op", {"exemption": {"kind": "temporary-import", "purpose": "trade fair IDEX",
                     "re_export_by": past, "recorded_by": "supervisor-ana", "reference": ""}})  # fmt: skip
    verify = _markctl(work, "records", "verify")
    assert verify.returncode == 0 and "intact" in verify.stdout  # a lead, not tampering
    assert f"warning: {key}: recorded exempt" in verify.stderr and past in verify.stderr
    as_json = json.loads(_markctl(work, "records", "verify", "--json").stdout)
    assert as_json["ok"] and len(as_json["warnings"]) == 1 and key in as_json["warnings"][0]
    show = _markctl(work, "records", "show", "LATE-7")
    assert "warning" in show.stderr and key in show.stderr and past in show.stderr
    assert f"{past} (DATE PASSED)" in _markctl(work, "records", "register").stdout
    # Marking it again from a request is skipped (it is exempt), and the warning names it too.
    request = (repo / "examples/exemptions/iti-import-temporary.toml").read_text()
    (work / "late.toml").write_text(request)
    again = _markctl(work, "mark", "late.toml", "--serial", "LATE-7", "--manufacturer", "Glock", "--machine",
                     "sim://grbl-1.1?clock=instant")  # fmt: skip
    assert again.returncode == 0 and "skipped: already recorded exempt" in again.stdout
    assert f"WARNING: its re-export date {past} has passed" in again.stdout
    assert _events(work, key) == ["planned", "exempted"]


def test_mark_records_an_exemption_without_touching_the_machine(
    work: Path, repo: Path, new_registry: Callable[..., Path]
) -> None:
    production = new_registry(work / "production.db", training=False)
    request = repo / "examples/exemptions/iti-import-temporary.toml"
    nowhere = ["--machine", "grbl+tcp://127.0.0.1:9", "--profile", "grbl-1.1", "--records", str(production)]
    # The control: a mark to cut on this machine fails (nothing listens there)...
    cut = _markctl(work, "mark", str(repo / "examples/requests/iti-import-steel-frame.toml"), "--serial", "P1",
                   "--manufacturer", "Glock", *nowhere)  # fmt: skip
    assert cut.returncode != 0
    # ...while the exemption is recorded: no machine was opened for it.
    run = _markctl(
        work, "mark", str(request), "--serial", "T9", "--manufacturer", "Glock", "--json", *nowhere
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["state"] == "exempt" and "recorded by supervisor-1" in result["message"]
    key = item_key_of("GLOCK|T9", "frame", "iti-import")
    with RecordStore.open(production) as store:
        history = store.history(key)
    assert [r.event for r in history] == ["planned", "exempted"]
    assert history[-1].data["exemption"]["reference"] == "KE-TI-2026-0042"
    again = _markctl(
        work, "mark", str(request), "--serial", "T9", "--manufacturer", "Glock", "--json", *nowhere
    )
    assert again.returncode == 0 and json.loads(again.stdout)["state"] == "skipped"
