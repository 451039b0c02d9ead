"""The same records on SQLite and on a real PostgreSQL: no SQLite-only SQL, concurrent writers safe.

The PostgreSQL cluster is a throwaway one (initdb + pg_ctl on a Unix socket in a temporary folder,
no TCP). PostgreSQL ships with this project's machines; where its binaries are absent the
PostgreSQL cases are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from markctl.records import ItemState, RecordStore, item_key_of

SIM = {"simulated": True}

PG_BIN = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def _as_postgres(*cmd: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL server binaries are not installed")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses root")
    base = Path(tempfile.mkdtemp(prefix="markctl-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data = base / "data"
    subprocess.run(_as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"),
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run(_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", f"-k {base} -c listen_addresses=''",
                                "-l", str(base / "log"), "-w", "start"), check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={base}"
    finally:
        subprocess.run(_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"),
                       capture_output=True)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'records.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        engine = create_engine(url)
        with engine.begin() as conn:  # a clean schema per test
            conn.execute(
                text(
                    "DROP TABLE IF EXISTS journal, chain_head, items, api_tokens, registry, alembic_version CASCADE"
                )
            )
        engine.dispose()
    RecordStore.init(url, site="test-depot", training=True, key_path=tmp_path / "site.key").close()
    yield url


def _plan(store: RecordStore, serial: str) -> str:
    weapon = f"ACME|{serial}"
    key = item_key_of(weapon, "frame", "iti-import")
    store.append(key, "planned", "op", {"serial": serial}, weapon_key=weapon, component="frame",
                 mark_profile="iti-import")  # fmt: skip
    return key


def test_life_cycle_and_tamper_detection(url: str) -> None:
    with RecordStore.open(url) as store:
        key = _plan(store, "S1")
        store.append(key, "started", "op", SIM)
        store.append(key, "marked", "op")
        assert store.item(key).state is ItemState.MARKED  # type: ignore[union-attr]
        assert store.verify().ok
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE journal SET actor = 'forger' WHERE seq = 3"))
        assert [(p.seq, p.kind) for p in store.verify().problems] == [(3, "altered")]


def test_concurrent_writers_keep_one_chain(url: str) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with RecordStore.open(url) as store:
                for i in range(15):
                    key = _plan(store, f"W{n}-{i}")
                    store.append(key, "started", f"op{n}", SIM)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with RecordStore.open(url) as store:
        report = store.verify()
        assert report.ok and report.rows == 1 + 4 * 15 * 2
        assert len(store.items(state=ItemState.STARTED)) == 60
