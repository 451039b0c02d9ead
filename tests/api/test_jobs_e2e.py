"""A whole job through the HTTP service on a simulated laser: 202, SSE progress, records, re-run skips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.api.conftest import Api

MANIFEST = """serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark
A1,Beretta,92FS,iti-import,frame,KE,26,yes
A2,Beretta,92FS,iti-import,frame,KE,26,yes
"""


def _submit(api: Api, repo: Path, manifest: str = MANIFEST, **extra: object) -> tuple[int, dict[str, object]]:
    body = {"manifest_csv": manifest, "catalogue_toml": (repo / "examples/import/parts.toml").read_text(),
            "machine": "laser", **extra}  # fmt: skip
    response = api.client.post("/jobs", json=body, headers=api.headers("operator"))
    return response.status_code, response.json()


def _events(api: Api, job_id: str) -> list[tuple[str, dict[str, object]]]:
    events = []
    with api.client.stream("GET", f"/jobs/{job_id}/events", headers=api.headers("operator")) as stream:
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


@pytest.mark.slow
def test_job_marks_streams_and_records(api: Api, repo: Path) -> None:
    status, job = _submit(api, repo)
    assert status == 202 and job["state"] in ("pre-checked", "running")
    events = _events(api, str(job["id"]))
    kinds = [k for k, _ in events]
    assert kinds[0] == "batch-started" and kinds[-1] == "end" and "progress" in kinds
    assert [e["state"] for k, e in events if k == "item-ended"] == ["marked", "marked"]
    final = api.client.get(f"/jobs/{job['id']}", headers=api.headers("auditor")).json()
    assert final["state"] == "done" and final["counts"] == {"marked": 2}
    for result in final["results"]:
        assert result["verification"]["passed"], result["verification"]
    items = api.client.get("/records/items", headers=api.headers("auditor")).json()
    assert {i["state"] for i in items} == {"marked"} and all(i["marks"] == 1 for i in items)
    verify = api.client.get("/records/verify", headers=api.headers("auditor")).json()
    assert verify["ok"] and verify["rows"] == 6  # planned, started, marked x 2
    started = [
        r
        for r in api.client.get("/records", headers=api.headers("auditor")).json()
        if r["event"] == "started"
    ]
    assert started[0]["actor"] == "operator-1" and len(started[0]["data"]["program_digest"]) == 64

    # The same manifest again: nothing is marked twice.
    status, again = _submit(api, repo)
    _events(api, str(again["id"]))
    final = api.client.get(f"/jobs/{again['id']}", headers=api.headers("operator")).json()
    assert final["counts"] == {"skipped": 2}


def test_rows_with_errors_are_rejected_with_the_report(api: Api, repo: Path) -> None:
    status, job = _submit(api, repo, MANIFEST + "A3,Beretta,92FS,iti-import,frame,ZZ,26,yes\n")
    assert status == 422 and job["state"] == "rejected"
    bad = [r for r in job["rows"] if r["verdict"] != "ok"]  # type: ignore[union-attr]
    assert [r["line"] for r in bad] == [4] and "import_country" in " ".join(bad[0]["problems"])
    assert api.client.get("/records", headers=api.headers("auditor")).json() == []  # nothing started


def test_overrides_need_a_supervisor(api: Api, repo: Path) -> None:
    status, _ = _submit(api, repo, MANIFEST, overrides={"2": "test"})
    assert status == 403
