"""The record store: an append-only, hash-chained journal of every mark, on SQLAlchemy Core.

Every event of an item (one kind of mark on one component of one weapon) is appended as a row whose
``hash`` is SHA-256 over the previous row's hash and this row's canonical JSON ``body``. An altered,
inserted or deleted row breaks the chain and :meth:`RecordStore.verify` names it. The chain head
(last sequence number and hash) is printed by ``verify`` so it can be kept outside the database
(a national register, a printed log): a forger who rewrites the whole chain still cannot match a head
recorded elsewhere.

Item life cycle (ISSUE 6): ``planned -> started -> marked | failed | unknown``. ``started`` is
committed before the first byte reaches a machine; ``unknown`` means the cycle's outcome is not
known (link lost, process killed) and the weapon must be inspected; only a supervisor's recorded
resolution moves it on. A marked item is never started again unless a supervisor records an
override with a reason. Writes are durable before they return (SQLite: WAL + synchronous=FULL).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import DatabaseError, OperationalError

from markctl.errors import DuplicateMarkError, ItemStateError, RecordError
from markctl.records.schema import GENESIS, chain_head, items, journal

__all__ = [
    "ItemState",
    "ItemView",
    "Problem",
    "Record",
    "RecordStore",
    "VerifyReport",
    "item_key_of",
]


_MIGRATION_LOCK = threading.Lock()


class ItemState(StrEnum):
    PLANNED = "planned"
    STARTED = "started"
    MARKED = "marked"
    FAILED = "failed"
    UNKNOWN = "unknown"


# event -> (states it may follow (None = a new item), state it leads to or None = from data)
_TRANSITIONS: Mapping[str, tuple[frozenset[ItemState | None], ItemState | None]] = {
    "planned": (frozenset({None, ItemState.PLANNED, ItemState.FAILED}), ItemState.PLANNED),
    "started": (frozenset({ItemState.PLANNED, ItemState.FAILED}), ItemState.STARTED),
    "marked": (frozenset({ItemState.STARTED}), ItemState.MARKED),
    "failed": (frozenset({ItemState.STARTED}), ItemState.FAILED),
    "unknown": (frozenset({ItemState.STARTED}), ItemState.UNKNOWN),
    # A supervisor resolves an unknown item after inspecting the weapon: data["outcome"] says.
    "resolved": (frozenset({ItemState.UNKNOWN}), None),
    # A supervisor allows a marked item to be marked again (e.g. an illegible mark), with a reason.
    "override": (frozenset({ItemState.MARKED}), ItemState.PLANNED),
    # Verification of an applied mark (image check) adds evidence without changing the state.
    "verified": (frozenset({ItemState.MARKED}), ItemState.MARKED),
}


def item_key_of(weapon_key: str, component: str, mark_profile: str) -> str:
    """The key of one mark on one component of one weapon."""
    return f"{weapon_key}|{component}|{mark_profile}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _canonical(content: Mapping[str, Any]) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Record:
    """One journal row."""

    seq: int
    at: str
    item_key: str
    event: str
    state: str
    actor: str
    data: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: Row[Any]) -> Record:
        body = json.loads(row.body)
        return cls(
            row.seq,
            row.at,
            row.item_key,
            row.event,
            row.state,
            row.actor,
            body["data"],
            row.prev_hash,
            row.hash,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "item_key": self.item_key,
            "event": self.event,
            "state": self.state,
            "actor": self.actor,
            "data": self.data,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class ItemView:
    """Current state of one item."""

    item_key: str
    weapon_key: str
    component: str
    mark_profile: str
    batch_id: str | None
    state: ItemState
    attempts: int
    marks: int
    last_seq: int
    updated_at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "item_key": self.item_key,
            "weapon_key": self.weapon_key,
            "component": self.component,
            "mark_profile": self.mark_profile,
            "batch_id": self.batch_id,
            "state": self.state.value,
            "attempts": self.attempts,
            "marks": self.marks,
            "last_seq": self.last_seq,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of :meth:`RecordStore.verify`."""

    seq: int | None
    kind: str  # altered | inserted-or-deleted | missing | truncated | index | corrupt | head
    detail: str

    def __str__(self) -> str:
        where = f"row {self.seq}" if self.seq is not None else "database"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    rows: int
    head_seq: int
    head_hash: str
    problems: tuple[Problem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


class RecordStore:
    """Records in a database named by a SQLAlchemy URL (``sqlite:///records.db`` by default)."""

    def __init__(self, url: str, *, clock: Callable[[], str] = _now) -> None:
        self.url = url
        self._clock = clock
        self._lock = threading.Lock()  # one writer per process; the chain head serialises processes
        try:
            self.engine: Engine = create_engine(url, future=True)
        except Exception as exc:  # a malformed URL is the user's input
            raise RecordError(f"records URL {url!r}: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._migrate()

    @classmethod
    def open(cls, location: str | Path) -> RecordStore:
        """A store from a URL, or from a file path (SQLite)."""
        text = str(location)
        if "://" not in text:
            Path(text).parent.mkdir(parents=True, exist_ok=True)
            text = f"sqlite:///{Path(text).resolve()}"
        return cls(text)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        config = Config()
        config.set_main_option("script_location", "markctl.records:migrations")
        head = ScriptDirectory.from_config(config).get_current_head()
        # Alembic's command API keeps module-level state: one migration at a time per process.
        with _MIGRATION_LOCK:
            try:
                with self.engine.begin() as conn:
                    if MigrationContext.configure(conn).get_current_revision() == head:
                        return
                    config.attributes["connection"] = conn
                    command.upgrade(config, "head")
            except DatabaseError as exc:
                raise RecordError(f"cannot open records at {self.url}: {exc.orig}") from exc

    # --- writing -----------------------------------------------------------------------------

    def append(
        self,
        item_key: str,
        event_name: str,
        actor: str,
        data: Mapping[str, Any] | None = None,
        *,
        weapon_key: str | None = None,
        component: str | None = None,
        mark_profile: str | None = None,
        batch_id: str | None = None,
    ) -> Record:
        """Append one event for an item, checking the item's life cycle; durable on return."""
        if event_name not in _TRANSITIONS:
            raise ValueError(f"unknown event {event_name!r}")
        if not actor:
            raise ValueError("every record names who did it (actor)")
        payload = dict(data or {})
        with self._lock:
            try:
                with self.engine.begin() as conn:
                    return self._append(
                        conn,
                        item_key,
                        event_name,
                        actor,
                        payload,
                        weapon_key,
                        component,
                        mark_profile,
                        batch_id,
                    )
            except OperationalError as exc:
                raise RecordError(f"cannot write records: {exc.orig}") from exc

    def _append(
        self,
        conn: Connection,
        item_key: str,
        event_name: str,
        actor: str,
        payload: dict[str, Any],
        weapon_key: str | None,
        component: str | None,
        mark_profile: str | None,
        batch_id: str | None,
    ) -> Record:
        # Claim the chain head first: the write lock (SQLite) / row lock (PostgreSQL) orders appenders.
        conn.execute(update(chain_head).where(chain_head.c.id == 1).values(seq=chain_head.c.seq + 1))
        head = conn.execute(select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.id == 1)).one()
        current = conn.execute(select(items).where(items.c.item_key == item_key)).first()
        state_before = ItemState(current.state) if current is not None else None
        allowed, target = _TRANSITIONS[event_name]
        if state_before not in allowed:
            self._refuse(item_key, event_name, state_before)
        if event_name == "resolved":
            outcome = payload.get("outcome")
            if outcome not in ("marked", "not-marked"):
                raise ValueError("a resolution says outcome 'marked' or 'not-marked'")
            if not payload.get("reason"):
                raise ValueError("a resolution needs a reason")
            target = ItemState.MARKED if outcome == "marked" else ItemState.FAILED
        if event_name == "override" and not payload.get("reason"):
            raise ValueError("an override needs a reason")
        assert target is not None
        at = self._clock()
        body = _canonical(
            {
                "seq": head.seq,
                "at": at,
                "item": item_key,
                "event": event_name,
                "state": target.value,
                "actor": actor,
                "data": payload,
            }
        )
        digest = _hash(head.hash, body)
        conn.execute(
            insert(journal).values(
                seq=head.seq,
                at=at,
                item_key=item_key,
                event=event_name,
                state=target.value,
                actor=actor,
                body=body,
                prev_hash=head.hash,
                hash=digest,
            )
        )
        conn.execute(update(chain_head).where(chain_head.c.id == 1).values(hash=digest))
        attempts = (current.attempts if current is not None else 0) + (event_name == "started")
        marks = (current.marks if current is not None else 0) + (
            target is ItemState.MARKED and event_name != "verified"
        )
        if current is None:
            if weapon_key is None or component is None or mark_profile is None:
                raise ValueError("a new item needs weapon_key, component and mark_profile")
            conn.execute(
                insert(items).values(
                    item_key=item_key,
                    weapon_key=weapon_key,
                    component=component,
                    mark_profile=mark_profile,
                    batch_id=batch_id,
                    state=target.value,
                    attempts=attempts,
                    marks=marks,
                    last_seq=head.seq,
                    updated_at=at,
                )
            )
        else:
            values: dict[str, Any] = {
                "state": target.value,
                "attempts": attempts,
                "marks": marks,
                "last_seq": head.seq,
                "updated_at": at,
            }
            if batch_id is not None:
                values["batch_id"] = batch_id
            conn.execute(update(items).where(items.c.item_key == item_key).values(**values))
        return Record(head.seq, at, item_key, event_name, target.value, actor, payload, head.hash, digest)

    @staticmethod
    def _refuse(item_key: str, event_name: str, state: ItemState | None) -> None:
        if event_name == "started" and state is ItemState.MARKED:
            raise DuplicateMarkError(
                "already marked with this mark",
                item_key=item_key,
                state=state,
                hint="a supervisor override is needed",
            )
        if event_name == "started" and state is ItemState.UNKNOWN:
            raise ItemStateError(
                "the last cycle's outcome is unknown; inspect the weapon",
                item_key=item_key,
                state=state,
                hint="a supervisor must resolve it first",
            )
        if event_name == "started" and state is ItemState.STARTED:
            raise ItemStateError("is being marked right now", item_key=item_key, state=state)
        shown = state.value if state is not None else "not planned"
        raise ItemStateError(f"cannot record {event_name!r} while {shown}", item_key=item_key, state=state)

    def recover_interrupted(
        self, actor: str = "markctl", *, is_stale: Callable[[Record], bool] = lambda record: True
    ) -> list[Record]:
        """Items left ``started`` by a process that died mid-cycle become ``unknown``.

        ``is_stale`` gets the item's ``started`` record and says whether its owner is gone; items of a
        live owner are left alone.
        """
        recovered = []
        for item in self.items(state=ItemState.STARTED):
            started = self.get(item.last_seq)
            if started is None or not is_stale(started):
                continue
            recovered.append(
                self.append(
                    item.item_key,
                    "unknown",
                    actor,
                    {
                        "reason": "the controller stopped during the cycle; inspect the weapon",
                        "started": started.seq,
                    },
                )  # fmt: skip
            )
        return recovered

    # --- reading -----------------------------------------------------------------------------

    def item(self, item_key: str) -> ItemView | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(items).where(items.c.item_key == item_key)).first()
        return None if row is None else _item_view(row)

    def items(
        self, *, batch_id: str | None = None, state: ItemState | None = None, weapon_key: str | None = None
    ) -> list[ItemView]:
        """Items in record order, optionally of one batch, in one state, or of one weapon (all its components)."""
        query = select(items).order_by(items.c.last_seq)
        if batch_id is not None:
            query = query.where(items.c.batch_id == batch_id)
        if weapon_key is not None:
            query = query.where(items.c.weapon_key == weapon_key)
        if state is not None:
            query = query.where(items.c.state == state.value)
        with self.engine.connect() as conn:
            return [_item_view(r) for r in conn.execute(query)]

    def history(self, item_key: str) -> list[Record]:
        query = select(journal).where(journal.c.item_key == item_key).order_by(journal.c.seq)
        with self.engine.connect() as conn:
            return [Record.from_row(r) for r in conn.execute(query)]

    def get(self, seq: int) -> Record | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(journal).where(journal.c.seq == seq)).first()
        return None if row is None else Record.from_row(row)

    def records(self, *, after: int = 0, limit: int | None = None) -> Iterator[Record]:
        query = select(journal).where(journal.c.seq > after).order_by(journal.c.seq)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            for row in conn.execute(query).yield_per(1000):
                yield Record.from_row(row)

    def head(self) -> tuple[int, str]:
        with self.engine.connect() as conn:
            row = conn.execute(select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.id == 1)).one()
        return int(row.seq), str(row.hash)

    # --- verification and export -------------------------------------------------------------

    def verify(self, *, expect_head: str | None = None) -> VerifyReport:
        """Recompute the chain; name every altered, inserted, deleted or reordered row."""
        problems: list[Problem] = []
        replay: dict[str, tuple[str, int]] = {}
        prev, expected, rows, last_seq = GENESIS, 1, 0, 0
        try:
            with self.engine.connect() as conn:
                if self.engine.dialect.name == "sqlite":
                    # Bytes flipped in an index page never reach the chain walk; SQLite's own check sees them.
                    verdict = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check").fetchall()]
                    if verdict != ["ok"]:
                        problems.append(Problem(None, "corrupt", "; ".join(verdict[:3])))
                for row in conn.execute(select(journal).order_by(journal.c.seq)).yield_per(2000):
                    rows += 1
                    if row.seq != expected:
                        if row.seq > expected:
                            problems.append(
                                Problem(row.seq, "missing", f"rows {expected}..{row.seq - 1} are gone")
                            )
                        else:
                            problems.append(
                                Problem(row.seq, "inserted-or-deleted", "sequence runs backwards")
                            )
                    if row.prev_hash != prev:
                        problems.append(
                            Problem(
                                row.seq,
                                "inserted-or-deleted",
                                "does not follow the row before it in the chain",
                            )
                        )
                    if _hash(row.prev_hash, row.body) != row.hash:
                        problems.append(Problem(row.seq, "altered", "content does not match its hash"))
                    problems.extend(_check_columns(row))
                    try:
                        replay[row.item_key] = (json.loads(row.body)["state"], row.seq)
                    except (ValueError, KeyError):
                        pass
                    prev, expected, last_seq = row.hash, row.seq + 1, row.seq
                head = conn.execute(
                    select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.id == 1)
                ).one()
                if (head.seq, head.hash) != (last_seq, prev):
                    problems.append(
                        Problem(
                            None,
                            "truncated",
                            f"chain head says row {head.seq} ({head.hash[:12]}...), the journal ends at row {last_seq}",
                        )
                    )
                for item in conn.execute(select(items.c.item_key, items.c.state, items.c.last_seq)):
                    if replay.get(item.item_key) != (item.state, item.last_seq):
                        problems.append(
                            Problem(
                                item.last_seq, "index", f"item {item.item_key} state differs from its journal"
                            )
                        )
                for key in replay.keys() - {i.item_key for i in conn.execute(select(items.c.item_key))}:
                    problems.append(
                        Problem(replay[key][1], "index", f"item {key} is missing from the item index")
                    )
        except DatabaseError as exc:
            problems.append(Problem(None, "corrupt", f"the database cannot be read: {exc.orig}"))
            return VerifyReport(rows, last_seq, prev, tuple(problems))
        if expect_head is not None and expect_head != prev:
            problems.append(Problem(last_seq, "head", f"chain ends in {prev}, expected {expect_head}"))
        return VerifyReport(rows, last_seq, prev, tuple(problems))

    def export(self, out: TextIO, fmt: str = "json") -> int:
        """Write every record as JSON (a list) or CSV; returns the count."""
        count = 0
        if fmt == "json":
            out.write("[")
            for count, record in enumerate(self.records(), start=1):
                out.write(("\n  " if count == 1 else ",\n  ") + json.dumps(record.as_dict(), sort_keys=True))
            out.write("\n]\n" if count else "]\n")
            return count
        if fmt == "csv":
            writer = csv.writer(out)
            writer.writerow(["seq", "at", "item_key", "event", "state", "actor", "data", "prev_hash", "hash"])
            for r in self.records():
                count += 1
                writer.writerow(
                    [
                        r.seq,
                        r.at,
                        r.item_key,
                        r.event,
                        r.state,
                        r.actor,
                        _canonical(r.data),
                        r.prev_hash,
                        r.hash,
                    ]
                )
            return count
        raise ValueError(f"export format must be json or csv, got {fmt!r}")

    def export_text(self, fmt: str = "json") -> str:
        buffer = io.StringIO()
        self.export(buffer, fmt)
        return buffer.getvalue()


def _check_columns(row: Row[Any]) -> list[Problem]:
    try:
        body = json.loads(row.body)
    except ValueError:
        return [Problem(row.seq, "altered", "body is not valid JSON")]
    expected = {
        "seq": row.seq,
        "at": row.at,
        "item": row.item_key,
        "event": row.event,
        "state": row.state,
        "actor": row.actor,
    }
    wrong = [k for k, v in expected.items() if body.get(k) != v]
    return (
        [Problem(row.seq, "altered", f"column(s) {', '.join(wrong)} differ from the hashed content")]
        if wrong
        else []
    )


def _item_view(row: Row[Any]) -> ItemView:
    return ItemView(
        row.item_key,
        row.weapon_key,
        row.component,
        row.mark_profile,
        row.batch_id,
        ItemState(row.state),
        row.attempts,
        row.marks,
        row.last_seq,
        row.updated_at,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # durable before a write returns, also across power loss
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
