"""A whole job through the HTTP service on a simulated laser: 202, SSE progress, records, re-run skips."""

from __future__ import annotations

import base64
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
    assert verify["ok"] and verify["rows"] == 10  # registry, 3 tokens; planned, started, marked x 2
    started = [
        r
        for r in api.client.get("/records", headers=api.headers("auditor")).json()
        if r["event"] == "started"
    ]
    assert started[0]["actor"] == "operator-1" and len(started[0]["data"]["program_digest"]) == 64

    # A photo of the first mark, checked against its record over HTTP, and the check recorded.
    marked = [
        r for r in api.client.get("/records", headers=api.headers("auditor")).json() if r["event"] == "marked"
    ]
    photo = base64.b64encode(Path(marked[0]["data"]["image"]).read_bytes()).decode()
    response = api.client.post(f"/records/{marked[0]['seq']}/verify-image", json={"image_base64": photo, "px_per_mm": 20},
                               headers=api.headers("auditor"))  # fmt: skip
    assert response.status_code == 200 and response.json()["data"]["verification"]["passed"]
    assert response.json()["actor"] == "auditor:auditor-1"
    bad = api.client.post(f"/records/{marked[0]['seq']}/verify-image", json={"image_base64": "aGVsbG8="},
                          headers=api.headers("auditor"))  # fmt: skip
    assert bad.status_code == 422

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
    rows = api.client.get("/records", headers=api.headers("auditor")).json()
    assert [r for r in rows if not r["item_key"].startswith("@")] == []  # only registry and token events


def test_overrides_need_a_supervisor(api: Api, repo: Path) -> None:
    status, _ = _submit(api, repo, MANIFEST, overrides={"2": "test"})
    assert status == 403


def test_layout_preview_formats(api: Api, repo: Path) -> None:
    import tomllib

    request = tomllib.loads((repo / "examples/requests/iti-import-steel-frame.toml").read_text())
    headers = api.headers("operator")
    report = api.client.post("/layouts/preview", json={"request": request}, headers=headers)
    assert report.status_code == 200 and report.json()["passed"] is True
    svg = api.client.post("/layouts/preview?fmt=svg", json={"request": request}, headers=headers)
    assert svg.headers["content-type"] == "image/svg+xml" and svg.text.startswith("<")
    png = api.client.post("/layouts/preview?fmt=png", json={"request": request}, headers=headers)
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    bad = {**request, "fields": {**request.get("fields", {}), "import_country": "ZZ"}}
    refused = api.client.post("/layouts/preview", json={"request": bad}, headers=headers)
    assert refused.status_code in (200, 422) and (
        refused.status_code == 422 or refused.json()["passed"] is False
    )


def test_lifespan_closes_machines_to_a_safe_state(repo: Path, records_db: Path) -> None:
    from fastapi.testclient import TestClient

    from markctl.api import create_app
    from markctl.auth import TokenStore
    from markctl.config import MachineEntry, Settings
    from markctl.drivers.base import SafeStateReached, State
    from markctl.records import RecordStore

    store = RecordStore.open(records_db)
    token = TokenStore(store).create("op", "operator")
    app = create_app(Settings(machines={"laser": MachineEntry(address="sim://grbl-1.1")}), store=store)
    with TestClient(app) as client:
        service = app.state.service
        client.portal.call(service.machine, "laser")  # type: ignore[union-attr]
        listed = client.get("/machines", headers={"Authorization": f"Bearer {token}"}).json()
        assert listed[0]["state"] == "idle"
        driver = service._slots["laser"].machine.driver
    assert driver.state is State.DISCONNECTED
    reached = driver.events_of(SafeStateReached)
    assert reached and reached[-1].reason == "close"
    store.close()


def test_api_statuses_for_bad_input_and_unknown_jobs(api: Api, repo: Path) -> None:
    body = {"manifest_csv": "serial,manufacturer\nX,Y\n", "catalogue_toml": (repo / "examples/import/parts.toml").read_text(),
            "machine": "laser"}  # fmt: skip
    response = api.client.post("/jobs", json=body, headers=api.headers("operator"))
    assert response.status_code == 422 and "missing column" in response.json()["detail"]
    assert api.client.get("/jobs/nope", headers=api.headers("operator")).status_code == 404
    blank = api.client.post("/jobs", json={**body, "overrides": {"2": ""}}, headers=api.headers("supervisor"))
    assert blank.status_code == 422
