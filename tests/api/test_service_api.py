"""The service's own rules over HTTP: registered machines only, machines checked when registered,
recovery, job summaries that survive aborts and bounded events, expiry, who may abort, item keys
with '/', offline docs, the OpenAPI error bodies, token expiry and the failed-auth rate limit."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from markctl.api import create_app
from markctl.auth import TokenStore
from markctl.config import MachineEntry, ServiceSection, Settings
from markctl.records import RecordStore
from markctl.records.schema import api_tokens
from tests.api.conftest import Api

MANIFEST = """serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark
B1,Beretta,92FS,iti-import,frame,KE,26,yes
B2,Beretta,92FS,iti-import,frame,KE,26,yes
"""

ONE = MANIFEST.rsplit("B2,", 1)[0]  # a single weapon: enough where what is tested is not the batch


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """An app on its own records, with chosen machines and [service] limits."""

    @contextmanager
    def make(machines: dict[str, str] | None = None, **limits: Any) -> Iterator[Api]:
        store = RecordStore.init(tmp_path / f"r{time.monotonic_ns()}.db", site="test-depot", training=True)
        tokens = TokenStore(store)
        issued = {role: tokens.create(f"{role}-1", role) for role in ("operator", "supervisor", "auditor")}
        issued["operator-2"] = tokens.create("operator-2", "operator")
        addresses = machines or {"laser": "sim://grbl-1.1?clock=instant"}
        settings = Settings(
            machines={name: MachineEntry(address=a) for name, a in addresses.items()},
            service=ServiceSection(**limits),
        )
        try:
            with TestClient(create_app(settings, store=store, out_dir=tmp_path / "out")) as client:
                yield Api(client, store, issued)
        finally:
            store.close()

    yield make


def _job(
    api: Api, repo: Path, manifest: str = MANIFEST, machine: str = "laser", role: str = "operator"
) -> Any:
    body = {"manifest_csv": manifest, "catalogue_toml": (repo / "examples/import/parts.toml").read_text(),
            "machine": machine}  # fmt: skip
    return api.client.post("/jobs", json=body, headers=api.headers(role))


def _wait(
    api: Api, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = api.client.get(f"/jobs/{job_id}", headers=api.headers("auditor")).json()
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


# --- machines ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "profile", "names"),
    [
        ("0", None, "scheme"),
        ("ftp://x", None, "scheme"),
        ("sim://grbl-1.1?clokc=instant", None, "option clokc"),
        ("sim://grbl-1.1?clock=sometimes", None, "option clock"),
        ("grbl+tcp://127.0.0.1:23?baudrate=9600", "grbl-1.1", "option baudrate"),
        ("grbl+tcp://127.0.0.1:99999", "grbl-1.1", "location"),
        ("grbl+tcp://127.0.0.1:23", None, "firmware profile"),
        ("grbl+tcp://127.0.0.1:23", "no-such-profile", "no-such-profile"),
        ("peen+modbus-tcp://127.0.0.1:502", "grbl-1.1", "protocol"),
        ("nosuch+tcp://127.0.0.1:23", "grbl-1.1", "nosuch"),
    ],
)
def test_registering_a_machine_checks_address_and_profile_at_once(
    api: Api, address: str, profile: str | None, names: str
) -> None:
    body = {"name": "m2", "address": address, **({"profile": profile} if profile else {})}
    response = api.client.post("/machines", json=body, headers=api.headers("supervisor"))
    assert response.status_code == 422, response.text
    assert names in response.json()["detail"]
    assert [m["name"] for m in api.client.get("/machines", headers=api.headers("supervisor")).json()] == [
        "laser"
    ]


def test_a_registered_machine_is_listed_and_names_are_unique(api: Api) -> None:
    body = {"name": "door-laser", "address": "grbl+tcp://127.0.0.1:2323", "profile": "grbl-1.1"}
    created = api.client.post("/machines", json=body, headers=api.headers("supervisor"))
    assert created.status_code == 201 and created.json()["added_by"] == "supervisor-1"
    again = api.client.post("/machines", json=body, headers=api.headers("supervisor"))
    assert again.status_code == 409 and "exists already" in again.json()["detail"]
    listed = api.client.get("/machines", headers=api.headers("operator")).json()
    assert [(m["name"], m["state"]) for m in listed] == [
        ("door-laser", "not connected"),
        ("laser", "not connected"),
    ]


def test_a_job_names_a_registered_machine_never_an_address(api: Api, repo: Path) -> None:
    for machine in ("sim://grbl-1.1?clock=instant", "grbl+tcp://127.0.0.1:23", "lazer"):
        response = _job(api, repo, machine=machine, role="supervisor")
        assert response.status_code == 422 and "not registered" in response.json()["detail"], response.text
    assert [m["name"] for m in api.client.get("/machines", headers=api.headers("supervisor")).json()] == [
        "laser"
    ]
    assert api.client.get("/jobs", headers=api.headers("operator")).json() == []
    assert api.store.items() == []  # nothing recorded for a refused job


def test_recover_reconnects_a_machine_that_lost_its_link(make_api: Callable[..., Any], repo: Path) -> None:
    faulty = "sim://grbl-1.1?clock=instant&faults=disconnect@line:400"
    with make_api({"laser": faulty}) as api:
        job = _job(api, repo).json()
        final = _wait(api, job["id"], lambda j: j["state"] in ("done", "failed"))
        assert final["counts"] == {"unknown": 1, "refused": 1}
        state = api.client.get("/machines", headers=api.headers("operator")).json()[0]["state"]
        assert state == "needs-recovery"
        refused = api.client.post("/machines/laser/recover", headers=api.headers("operator"))
        assert refused.status_code == 403
        assert api.client.post("/machines/nope/recover", headers=api.headers("supervisor")).status_code == 404
        recovered = api.client.post("/machines/laser/recover", headers=api.headers("supervisor"))
        assert recovered.status_code == 200, recovered.text
        assert recovered.json()["state"] == "idle" and recovered.json()["safe_state_confirmed"] is True


# --- jobs --------------------------------------------------------------------------------------


def test_an_aborted_job_shows_its_counts_and_results_and_only_its_submitter_or_a_supervisor_may_abort(
    make_api: Callable[..., Any], repo: Path
) -> None:
    with make_api({"laser": "sim://grbl-1.1?clock=realtime"}) as api:
        job = _job(api, repo).json()
        _wait(api, job["id"], lambda j: j["state"] == "running" and (j["events"]["last"] or 0) > 3)
        other = api.client.post(f"/jobs/{job['id']}/abort", headers=api.headers("operator-2"))
        assert other.status_code == 403 and "operator-1" in other.json()["detail"]
        aborted = api.client.post(f"/jobs/{job['id']}/abort", headers=api.headers("supervisor"))
        assert aborted.status_code == 200
        summary = aborted.json()
        assert summary["state"] == "aborted" and summary["counts"] == {"unknown": 1}
        [result] = summary["results"]
        assert result["item_key"] == "BERETTA|B1|frame|iti-import" and result["state"] == "unknown"
        assert api.store.item(result["item_key"]).last_seq == result["record"]


def test_events_are_a_bounded_window_and_the_summary_stays_whole(
    make_api: Callable[..., Any], repo: Path
) -> None:
    with make_api(event_window=10) as api:
        job = _job(api, repo, ONE).json()
        final = _wait(api, job["id"], lambda j: j["state"] == "done")
        assert final["counts"] == {"marked": 1} and len(final["results"]) == 1
        assert final["events"]["last"] > 100  # thousands of progress events were emitted...
        assert final["events"]["kept_from"] == final["events"]["last"] - 9  # ...ten are kept
        events = _stream(api, job["id"])
        last = final["events"]["last"]
        window = [e for e in events if e["seq"] > last - 10]
        assert [e["seq"] for e in window] == list(range(last - 9, last + 1))
        # Before the window only the milestones are left, and all of them are.
        earlier = [e["type"] for e in events if e["seq"] <= last - 10]
        assert earlier == ["batch-started", "item-started"]
        assert [e["type"] for e in events if e["type"] != "progress"] == [
            "batch-started", "item-started", "item-ended", "batch-ended"
        ]  # fmt: skip


def _stream(api: Api, job_id: str) -> list[dict[str, Any]]:
    with api.client.stream("GET", f"/jobs/{job_id}/events", headers=api.headers("operator")) as s:
        return [
            json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: ") and '"seq"' in line
        ]


def test_finished_jobs_expire_but_their_records_stay(make_api: Callable[..., Any], repo: Path) -> None:
    with make_api(keep_finished_jobs=1) as api:
        first = _job(api, repo, ONE).json()
        _wait(api, first["id"], lambda j: j["state"] == "done")
        second = _job(api, repo, ONE).json()  # expiry runs when a job is submitted or listed
        _wait(api, second["id"], lambda j: j["state"] == "done")
        listed = [j["id"] for j in api.client.get("/jobs", headers=api.headers("operator")).json()]
        assert listed == [second["id"]]
        gone = api.client.get(f"/jobs/{first['id']}", headers=api.headers("operator"))
        assert gone.status_code == 404 and "records stay" in gone.json()["detail"]
        assert [i.state.value for i in api.store.items()] == ["marked"]


def test_a_rejected_job_leaves_nothing_behind(api: Api, repo: Path) -> None:
    response = _job(api, repo, MANIFEST + "B3,Beretta,92FS,iti-import,frame,ZZ,26,yes\n")
    assert response.status_code == 422 and response.json()["state"] == "rejected"
    assert (
        api.client.get(f"/jobs/{response.json()['id']}", headers=api.headers("operator")).status_code == 404
    )
    assert api.client.get("/jobs", headers=api.headers("operator")).json() == []


# --- items with '/' in their serial -------------------------------------------------------------


def _unknown_item(api: Api, serial: str) -> str:
    key = f"BERETTA|{serial}|frame|iti-import"
    api.store.append(key, "planned", "op", {}, weapon_key=f"BERETTA|{serial}", component="frame",
                     mark_profile="iti-import")  # fmt: skip
    api.store.append(key, "started", "op", {"simulated": True})
    api.store.append(key, "unknown", "op", {"error": "link lost"})
    return key


@pytest.mark.parametrize("encode_slash", [False, True], ids=["raw", "%2F"])
def test_an_item_whose_serial_holds_a_slash_can_be_resolved(api: Api, encode_slash: bool) -> None:
    key = _unknown_item(api, "A/17/2026")
    path = quote(key, safe="" if encode_slash else "/")
    assert ("%2F" in path) is encode_slash
    response = api.client.post(f"/items/{path}/resolve", json={"outcome": "not-marked", "reason": "inspected: blank"},
                               headers=api.headers("supervisor"))  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["item_key"] == key and api.store.item(key).state.value == "failed"


# --- documentation and errors --------------------------------------------------------------------


@pytest.mark.parametrize(("page", "assets"), [("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]),
                                              ("/redoc", ["redoc.standalone.js"])])  # fmt: skip
def test_docs_pages_work_offline(api: Api, page: str, assets: list[str]) -> None:
    html = api.client.get(page)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assert "http://" not in html.text and "https://" not in html.text  # nothing from a CDN or font host
    for asset in assets:
        assert f"/docs-assets/{asset}" in html.text
        served = api.client.get(f"/docs-assets/{asset}")
        assert served.status_code == 200 and len(served.content) > 100_000


def test_openapi_lists_the_error_answers_with_their_body(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if path == "/health":
                continue
            for status in ("401", "403", "422"):
                assert status in operation["responses"], (method, path, status)
                ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/Problem")
            # (the records router's error answers are its owner's to document)
            if "{" in path and not path.startswith("/records"):
                assert "404" in operation["responses"], (method, path)
    problem = schema["components"]["schemas"]["Problem"]["properties"]
    assert problem["detail"]["type"] == "string"
    bad = api.client.post("/jobs", json={"manifest_csv": "x"}, headers=api.headers("operator"))
    assert bad.status_code == 422
    assert bad.json()["detail"] == "body.catalogue_toml: Field required"
    assert {tuple(e["loc"]) for e in bad.json()["errors"]} == {
        ("body", "catalogue_toml"),
        ("body", "machine"),
    }


# --- tokens -------------------------------------------------------------------------------------


def test_an_old_token_expires(make_api: Callable[..., Any]) -> None:
    with make_api(token_max_age_days=30) as api:
        assert api.client.get("/jobs", headers=api.headers("operator")).status_code == 200
        with api.store.engine.begin() as conn:
            conn.execute(update(api_tokens).where(api_tokens.c.name == "operator-1")
                         .values(created_at="2026-01-01T00:00:00+00:00"))  # fmt: skip
        expired = api.client.get("/jobs", headers=api.headers("operator"))
        assert expired.status_code == 401 and "expired" in expired.json()["detail"]
        assert "markctl tokens create" in expired.json()["detail"]


def test_failed_authentication_is_rate_limited(make_api: Callable[..., Any]) -> None:
    with make_api(auth_failures_per_minute=5) as api:
        wrong = {"Authorization": "Bearer guess"}
        assert [api.client.get("/jobs", headers=wrong).status_code for _ in range(5)] == [401] * 5
        limited = api.client.get("/jobs", headers=wrong)
        assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
        assert "too many failed authentications" in limited.json()["detail"]
        # Guessing from that address stops even with a right token; /health still answers.
        assert api.client.get("/jobs", headers=api.headers("operator")).status_code == 429
        assert api.client.get("/health").status_code == 200
