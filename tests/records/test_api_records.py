"""The records over HTTP: the register streamed and formula-safe, lookups, paging, a production
registry refusing a simulated job, a stuck item resolved, a forged token refused, no endpoint that
runs database work on the event loop."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from markctl.api import create_app
from markctl.api.routers import records as records_router
from markctl.auth import TokenStore
from markctl.config import MachineEntry, Settings
from markctl.jobs.owner import this_process
from markctl.records import RecordStore, item_key_of

SIM = {"machine": "sim://grbl-1.1", "simulated": True}
MANIFEST = """serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark
H1,Beretta,92FS,iti-import,frame,KE,26,yes
"""


def _mark(store: RecordStore, maker: str, serial: str) -> str:
    weapon = f"{maker}|{serial}".upper()
    key = item_key_of(weapon, "frame", "iti-import")
    store.append(key, "planned", "op", {"identity": {"manufacturer": maker, "serial": serial}}, weapon_key=weapon,
                 component="frame", mark_profile="iti-import", batch_id="B1")  # fmt: skip
    store.append(
        key, "started", "op", {**SIM, "request": {"fields": {"serial": serial, "importer": "+1 555"}}}
    )
    store.append(key, "marked", "op", {"image": None})
    return key


class Client:
    def __init__(self, client: TestClient, store: RecordStore, tokens: dict[str, str]) -> None:
        self.http, self.store, self.tokens = client, store, tokens

    def get(self, url: str, role: str = "auditor") -> object:
        return self.http.get(url, headers={"Authorization": f"Bearer {self.tokens[role]}"})


def _client(path: Path, tmp_path: Path) -> Iterator[Client]:
    store = RecordStore.open(path)
    tokens = TokenStore(store)
    issued = {role: tokens.create(f"{role}-1", role) for role in ("operator", "supervisor", "auditor")}
    settings = Settings(machines={"laser": MachineEntry(address="sim://grbl-1.1?clock=instant")})
    with TestClient(create_app(settings, store=store, out_dir=tmp_path / "out")) as client:
        yield Client(client, store, issued)
    store.close()


@pytest.fixture
def api(records_db: Path, tmp_path: Path) -> Iterator[Client]:
    yield from _client(records_db, tmp_path)


@pytest.fixture
def production(production_db: Path, tmp_path: Path) -> Iterator[Client]:
    yield from _client(production_db, tmp_path)


def test_register_lookup_paging_and_export(api: Client) -> None:
    for n in range(5):
        _mark(api.store, "=HYPERLINK(x)" if n == 0 else "Acme", f"A{n}")
    register = api.get("/records/register?format=csv")
    assert register.status_code == 200 and register.headers["content-type"].startswith("text/csv")  # type: ignore[attr-defined]
    rows = list(csv.reader(io.StringIO(register.text)))  # type: ignore[attr-defined]
    assert len(rows) == 6 and not [c for r in rows for c in r if c[:1] in ("=", "+", "-", "@")]
    assert "'=HYPERLINK(X)|A0" in rows[1] and "importer: +1 555 / serial: A0" in rows[1][7]
    assert api.get("/records/weapons?serial=a3").json() == ["ACME|A3"]  # type: ignore[attr-defined]
    entry = api.get("/records/weapons/acme%7Ca3").json()  # type: ignore[attr-defined]
    assert entry["weapon"] == "ACME|A3" and entry["marks"][0]["simulated"] is True
    page1 = api.get("/records/items?limit=2").json()  # type: ignore[attr-defined]
    page2 = api.get(f"/records/items?limit=2&after={page1[-1]['last_seq']}").json()  # type: ignore[attr-defined]
    assert len(page1) == len(page2) == 2 and page1[-1]["item_key"] != page2[0]["item_key"]
    export = api.get("/records/export?format=csv")
    assert export.text.count("\n") == 1 + api.store.head()[0]  # type: ignore[attr-defined]
    assert api.get("/records/register?format=xml").status_code == 422  # type: ignore[attr-defined]


def test_production_registry_refuses_a_simulated_job(production: Client, repo: Path) -> None:
    body = {"manifest_csv": MANIFEST, "catalogue_toml": (repo / "examples/import/parts.toml").read_text(),
            "machine": "laser"}  # fmt: skip
    response = production.http.post(
        "/jobs", json=body, headers={"Authorization": f"Bearer {production.tokens['operator']}"}
    )
    job = response.json()
    assert job["state"] == "rejected" and "is simulated; the production registry" in job["error"]
    assert production.store.items() == []


def test_supervisor_resolves_an_item_its_dead_process_left_started(api: Client) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    key = item_key_of("ACME|S1", "frame", "iti-import")
    api.store.append(key, "planned", "op", weapon_key="ACME|S1", component="frame", mark_profile="iti-import")
    api.store.append(key, "started", "op", {**SIM, "owner": {**this_process(), "pid": int(dead.stdout)}})
    response = api.http.post(f"/items/{key}/resolve", json={"outcome": "marked", "reason": "mark is present"},
                             headers={"Authorization": f"Bearer {api.tokens['supervisor']}"})  # fmt: skip
    assert response.status_code == 200 and response.json()["state"] == "marked"
    assert [r.event for r in api.store.history(key)] == ["planned", "started", "unknown", "resolved"]


def test_a_token_written_into_the_table_is_refused(api: Client, records_db: Path) -> None:
    con = sqlite3.connect(records_db)
    con.execute("INSERT INTO api_tokens VALUES (?, 'mallory', 'auditor', '2026-01-01', 0)",
                (hashlib.sha256(b"forged").hexdigest(),))  # fmt: skip
    con.commit()
    con.close()
    assert api.http.get("/records", headers={"Authorization": "Bearer forged"}).status_code == 401
    assert api.get("/records").status_code == 200  # type: ignore[attr-defined]
    assert any(p["kind"] == "token" for p in api.get("/records/verify").json()["problems"])  # type: ignore[attr-defined]


def test_no_records_endpoint_reads_the_database_on_the_event_loop() -> None:
    # FastAPI runs plain functions in its threadpool; a coroutine endpoint would block the loop
    # (and every machine's I/O) for as long as its database work takes. The image check awaits a
    # thread; verify, export and the register await a worker process (tests/api/test_records_worker.py).
    delegating = {"/records/{seq}/verify-image", "/records/verify", "/records/export", "/records/register"}
    for route in records_router.router.routes:
        endpoint = route.endpoint  # type: ignore[attr-defined]
        if route.path in delegating:  # type: ignore[attr-defined]
            continue
        assert not asyncio.iscoroutinefunction(endpoint), route.path  # type: ignore[attr-defined]
