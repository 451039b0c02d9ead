"""Records: life cycle, durability, and tampering detected and named by verify."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest

from markctl.errors import DuplicateMarkError, ItemStateError, RecordError
from markctl.records import ItemState, RecordStore, item_key_of

SIM = {"simulated": True}

KEY = item_key_of("BERETTA|P123", "frame", "iti-import")


def _plan(store: RecordStore, weapon: str = "BERETTA|P123", batch: str | None = "B1") -> str:
    key = item_key_of(weapon, "frame", "iti-import")
    store.append(key, "planned", "op", {"fields": {"serial": weapon}}, weapon_key=weapon, component="frame",
                 mark_profile="iti-import", batch_id=batch)  # fmt: skip
    return key


def _mark(store: RecordStore, weapon: str) -> str:
    key = _plan(store, weapon)
    store.append(key, "started", "op", {"machine": "sim://grbl-1.1", "simulated": True})
    store.append(key, "marked", "op", {"program_digest": "d" * 64})
    return key


@pytest.fixture
def store(records_db: Path) -> RecordStore:
    s = RecordStore.open(records_db)
    yield s  # type: ignore[misc]
    s.close()


def test_life_cycle_and_history(store: RecordStore) -> None:
    key = _plan(store)
    assert store.item(key).state is ItemState.PLANNED  # type: ignore[union-attr]
    store.append(key, "started", "op", SIM)
    store.append(key, "failed", "op", {"error": "error:9"})
    store.append(key, "started", "op", SIM)
    store.append(key, "marked", "op")
    item = store.item(key)
    assert item is not None and item.state is ItemState.MARKED and item.attempts == 2 and item.marks == 1
    assert [r.event for r in store.history(key)] == ["planned", "started", "failed", "started", "marked"]
    assert store.verify().ok


def test_marked_item_is_never_started_again_without_override(store: RecordStore) -> None:
    key = _mark(store, "BERETTA|P123")
    with pytest.raises(DuplicateMarkError, match="already marked"):
        store.append(key, "started", "op", SIM)
    with pytest.raises(ValueError, match="needs a reason"):
        store.append(key, "override", "supervisor:ana")
    store.append(key, "override", "supervisor:ana", {"reason": "mark illegible after finishing"})
    store.append(key, "started", "op", SIM)
    store.append(key, "marked", "op")
    assert store.item(key).marks == 2  # type: ignore[union-attr]
    assert store.verify().ok


def test_unknown_needs_resolution(store: RecordStore) -> None:
    key = _plan(store)
    store.append(key, "started", "op", SIM)
    store.append(key, "unknown", "op", {"reason": "link lost at line 40"})
    with pytest.raises(ItemStateError, match="outcome is unknown"):
        store.append(key, "started", "op", SIM)
    with pytest.raises(ValueError, match="outcome"):
        store.append(key, "resolved", "supervisor:ana", {"reason": "looked"})
    store.append(
        key, "resolved", "supervisor:ana", {"outcome": "not-marked", "reason": "no mark on the frame"}
    )
    assert store.item(key).state is ItemState.FAILED  # type: ignore[union-attr]
    store.append(key, "started", "op", SIM)


def test_illegal_steps_are_refused_and_leave_nothing(store: RecordStore) -> None:
    with pytest.raises(ItemStateError, match="not planned"):
        store.append(KEY, "started", "op", SIM)
    key = _plan(store)
    with pytest.raises(ItemStateError, match="cannot record 'marked' while planned"):
        store.append(key, "marked", "op")
    assert store.head()[0] == 2 and len(list(store.records())) == 2  # the registry's creation, the plan
    assert store.verify().ok


def test_interrupted_items_become_unknown(store: RecordStore) -> None:
    key = _plan(store)
    store.append(key, "started", "op", SIM)
    (record,) = store.recover_interrupted()
    assert record.event == "unknown" and store.item(key).state is ItemState.UNKNOWN  # type: ignore[union-attr]


def test_records_survive_reopen(records_db: Path) -> None:
    with RecordStore.open(records_db) as s:
        key = _mark(s, "X|1")
        head = s.head()
    with RecordStore.open(records_db) as s:
        assert s.item(key).state is ItemState.MARKED  # type: ignore[union-attr]
        report = s.verify(expect_head=head[1])
        assert report.ok and report.rows == 4 and report.head_hash == head[1]


def test_export_json_and_csv(store: RecordStore) -> None:
    _mark(store, "X|1")
    data = json.loads(store.export_text("json"))
    assert [r["event"] for r in data] == ["registry", "planned", "started", "marked"]
    assert data[3]["data"] == {"program_digest": "d" * 64}
    rows = list(csv.reader(io.StringIO(store.export_text("csv"))))
    assert rows[0][0] == "seq" and len(rows) == 5 and rows[4][4] == "marked"
    with pytest.raises(ValueError):
        store.export(io.StringIO(), "xml")


# --- tampering -------------------------------------------------------------------------------


@pytest.fixture
def tampered(records_db: Path) -> tuple[Path, RecordStore]:
    # Row 1 is the registry's creation; then 3 rows per weapon: SN000i has rows 3i+2..3i+4.
    path = records_db
    store = RecordStore.open(path)
    for i in range(5):
        _mark(store, f"MAKER|SN{i:04d}")
    assert store.verify().ok and store.head()[0] == 16
    store.close()
    return path, store


def _sql(path: Path, statement: str, *args: object) -> None:
    con = sqlite3.connect(path)
    con.execute(statement, args)
    con.commit()
    con.close()


def _problems(path: Path) -> list[tuple[int | None, str]]:
    with RecordStore.open(path) as s:
        return [(p.seq, p.kind) for p in s.verify().problems]


def test_edited_row_is_named(tampered: tuple[Path, RecordStore]) -> None:
    path, _ = tampered
    con = sqlite3.connect(path)
    body = con.execute("SELECT body FROM journal WHERE seq = 7").fetchone()[0]
    con.close()
    _sql(path, "UPDATE journal SET body = ? WHERE seq = 7", body.replace("SN0001", "SN9999"))
    assert (7, "altered") in _problems(path)


def test_edited_column_is_named(tampered: tuple[Path, RecordStore]) -> None:
    path, _ = tampered
    _sql(path, "UPDATE journal SET actor = 'someone else' WHERE seq = 10")
    assert _problems(path) == [(10, "altered")]


def test_deleted_row_is_named(tampered: tuple[Path, RecordStore]) -> None:
    path, _ = tampered
    _sql(path, "DELETE FROM journal WHERE seq = 8")
    problems = _problems(path)
    assert (9, "missing") in problems and (9, "inserted-or-deleted") in problems


def test_rows_deleted_from_the_end_are_noticed(tampered: tuple[Path, RecordStore]) -> None:
    path, _ = tampered
    _sql(path, "DELETE FROM journal WHERE seq >= 15")
    assert (None, "truncated") in _problems(path)


def test_inserted_row_is_named(tampered: tuple[Path, RecordStore]) -> None:
    path, _ = tampered
    con = sqlite3.connect(path)
    row = con.execute("SELECT * FROM journal WHERE seq = 5").fetchone()
    con.execute("UPDATE journal SET seq = seq + 100 WHERE seq > 5")
    con.execute(
        "INSERT INTO journal VALUES (6, ?, ?, ?, ?, ?, ?, ?, ?)",
        (row[1], row[2], row[3], row[4], "forger", row[6], row[7], "f" * 64),
    )
    con.commit()
    con.close()
    problems = _problems(path)
    assert (6, "altered") in problems and (106, "missing") in problems


def test_item_index_tampering_is_named(tampered: tuple[Path, RecordStore]) -> None:
    path, _ = tampered
    _sql(path, "UPDATE items SET state = 'planned' WHERE item_key LIKE '%SN0002%'")
    assert any(kind == "index" for _, kind in _problems(path))


@pytest.mark.parametrize(
    "needle", [b"SN0003", b'"item":"MAKER|SN0003'], ids=["first-occurrence", "hashed-body"]
)
def test_flipped_byte_in_the_file_is_detected(tampered: tuple[Path, RecordStore], needle: bytes) -> None:
    path, _ = tampered
    raw = bytearray(path.read_bytes())
    at = raw.find(needle)
    assert at > 0
    raw[at + needle.index(b"SN0003") + 2] ^= 0x01  # "SN0003" -> "SN1003"
    path.write_bytes(bytes(raw))
    assert any(kind in ("altered", "corrupt") for _, kind in _problems(path))


def test_rewritten_chain_is_caught_by_an_external_head(tampered: tuple[Path, RecordStore]) -> None:
    path, _ = tampered
    with RecordStore.open(path) as s:
        kept_elsewhere = s.head()[1]
    # A forger who deletes the last event and rewinds the head cleanly passes the internal checks...
    con = sqlite3.connect(path)
    prev = con.execute("SELECT hash FROM journal WHERE seq = 15").fetchone()[0]
    con.execute("DELETE FROM journal WHERE seq = 16")
    con.execute("UPDATE chain_head SET seq = 15, hash = ?", (prev,))
    con.execute("UPDATE items SET state='started', marks=0, last_seq=15 WHERE item_key LIKE '%SN0004%'")
    con.commit()
    con.close()
    with RecordStore.open(path) as s:
        assert s.verify().ok
        # ...but not the head kept outside the database.
        assert [p.kind for p in s.verify(expect_head=kept_elsewhere).problems] == ["head"]


def test_unopenable_database_is_a_record_error(tmp_path: Path) -> None:
    # An existing file that is not a database at all: named, never overwritten.
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RecordError, match="cannot open records"):
        RecordStore.open(bad)


def test_registry_mode_decides_which_machines_may_mark(records_db: Path, production_db: Path) -> None:
    from markctl.records import RegistryModeError

    for path, refused, accepted in ((records_db, False, True), (production_db, True, False)):
        with RecordStore.open(path) as s:
            key = _plan(s)
            with pytest.raises(ValueError, match="says whether the machine is simulated"):
                s.append(key, "started", "op", {"machine": "grbl+serial:///dev/ttyUSB0"})
            with pytest.raises(RegistryModeError, match="registry of site"):
                s.append(key, "started", "op", {"machine": "m", "simulated": refused})
            s.append(key, "started", "op", {"machine": "m", "simulated": accepted})
            assert s.verify().ok and [r.event for r in s.history(key)] == ["planned", "started"]


def test_open_never_creates_and_init_never_overwrites(tmp_path: Path, records_db: Path) -> None:
    from markctl.records import NoRegistryError

    with pytest.raises(NoRegistryError, match="no registry at"):
        RecordStore.open(tmp_path / "typo.db")
    assert not (tmp_path / "typo.db").exists()
    with pytest.raises(RecordError, match="exists already"):
        RecordStore.init(records_db, site="again")


def test_a_database_from_before_registries_is_adopted_by_init(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from markctl.records import NoRegistryError

    path = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{path}")
    config = Config()
    config.set_main_option("script_location", "markctl.records:migrations")
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            text("INSERT INTO api_tokens VALUES ('" + "a" * 64 + "', 'old-auditor', 'auditor', 'x', 0)")
        )
    engine.dispose()
    with pytest.raises(NoRegistryError, match="holds no initialised registry"):
        RecordStore.open(path)
    with RecordStore.init(path, site="Old Depot") as store:
        assert store.registry.site == "Old Depot" and not store.registry.training
        assert [r.event for r in store.records()] == ["registry", "token-created"]
        assert store.verify().ok
