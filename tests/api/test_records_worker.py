"""Verify, export and the register run in a worker process (markctl.records.worker): the service
answers the same bytes as the in-process generators, the worker runs at the lowest CPU priority,
and a stream that is closed early (the client went away) kills its worker rather than letting it
finish."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from markctl.api import create_app
from markctl.auth import TokenStore
from markctl.config import Settings
from markctl.records import RecordStore, item_key_of
from markctl.records import worker as records_worker
from markctl.records.register import Filters
from markctl.records.worker import export_chunks, register_chunks, verify_answer
from tests.conftest import make_registry

WEAPONS = 700  # > one chunk of 500, and several 64 KiB pipe reads


def _fill(db: Path) -> None:
    """Items with text that JSON and CSV escape differently: non-ASCII, quotes, a formula start."""
    with RecordStore.open(db) as store:
        for n in range(WEAPONS):
            weapon = f"BERETTA|S{n:04d}"
            store.append(item_key_of(weapon, "frame", "iti-import"), "planned", "=op \"Zoë\"",
                         {"identity": {"manufacturer": "Beretta", "serial": f"S{n:04d}", "model": "92FS ✓"},
                          "note": "Überprüft, \"ja\"\n"},
                         weapon_key=weapon, component="frame", mark_profile="iti-import", batch_id=f"B{n % 3}")  # fmt: skip


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = make_registry(tmp_path_factory.mktemp("worker") / "records.db")
    _fill(db)
    return db


@pytest.fixture
def client(filled: Path) -> Iterator[tuple[TestClient, RecordStore, dict[str, str]]]:
    store = RecordStore.open(filled)
    token = TokenStore(store).create(f"aud-{os.urandom(3).hex()}", "auditor")
    with TestClient(create_app(Settings(), store=store)) as http:
        yield http, store, {"Authorization": f"Bearer {token}"}
    store.close()


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_from_the_worker_is_the_same_bytes_as_in_process(client: Any, fmt: str) -> None:
    http, store, auditor = client
    response = http.get(f"/records/export?format={fmt}", headers=auditor)
    assert response.status_code == 200
    assert response.content == "".join(export_chunks(store, fmt)).encode()
    if fmt == "json":
        assert len(json.loads(response.content)) == store.head()[0]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_register_from_the_worker_is_the_same_bytes_as_in_process(client: Any, fmt: str) -> None:
    http, store, auditor = client
    response = http.get(f"/records/register?format={fmt}&batch=B1", headers=auditor)
    assert response.status_code == 200
    expected = "".join(register_chunks(store, fmt, Filters(batch="B1"))).encode()
    assert response.content == expected and "92FS ✓" in response.text


def test_verify_from_the_worker_is_the_in_process_answer(client: Any) -> None:
    http, store, auditor = client
    response = http.get("/records/verify", headers=auditor)
    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(verify_answer(store, None)))
    assert response.json()["ok"] is True
    bad = http.get("/records/verify?expect_head=nothex", headers=auditor)
    assert bad.status_code == 422 and "expect-head" in bad.json()["detail"]


def test_a_worker_that_cannot_open_the_registry_is_a_one_line_error(tmp_path: Path, client: Any) -> None:
    class Gone:  # a store whose file went away under the service
        url = f"sqlite:///{tmp_path / 'missing.db'}"

    async def first() -> bytes:
        chunks = records_worker.stream_task(Gone(), "export", {"format": "csv"})
        try:
            return await anext(chunks)
        finally:
            await chunks.aclose()

    with pytest.raises(records_worker.RecordError, match="failed in its worker process: .*no registry"):
        asyncio.run(first())


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_a_closed_export_kills_its_worker_which_ran_at_idle_priority(
    filled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[asyncio.subprocess.Process] = []
    real_start = records_worker._start

    async def spy(store: Any, task: str, args: dict[str, Any]) -> asyncio.subprocess.Process:
        started.append(await real_start(store, task, args))
        return started[-1]

    monkeypatch.setattr(records_worker, "_start", spy)
    monkeypatch.delenv(records_worker.PRIORITY_ENV, raising=False)

    async def read_one_chunk_and_leave() -> tuple[int, int | None]:
        with RecordStore.open(filled) as store:
            chunks = records_worker.stream_task(store, "export", {"format": "json"})
            await anext(chunks)  # the worker has started writing; the rest no longer fits the pipe
            policy = os.sched_getscheduler(started[0].pid)
            await chunks.aclose()  # as when the client goes away
            return policy, started[0].returncode

    policy, returncode = asyncio.run(read_one_chunk_and_leave())
    assert policy == os.SCHED_IDLE
    assert returncode == -9  # killed, not finished: the export stopped with its client


def test_the_priority_can_be_chosen() -> None:
    script = (
        "from markctl.records.worker import lower_priority; import os; print(lower_priority(), os.nice(0))"
    )
    out = {}
    for wanted in ("idle", "nice", "normal"):
        env = {**os.environ, records_worker.PRIORITY_ENV: wanted}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                            text=True, check=True)  # fmt: skip
        out[wanted] = done.stdout.split()
    assert out["nice"] == ["nice", "19"]
    assert out["normal"][0] == "normal"
    if hasattr(os, "SCHED_IDLE"):
        assert out["idle"][0] == "idle"
