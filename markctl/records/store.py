"""The record store: an append-only, hash-chained journal of every mark, on SQLAlchemy Core.

Every event of an item (one kind of mark on one component of one weapon) is appended as a row whose
``hash`` is SHA-256 over the previous row's hash and this row's canonical JSON ``body``. An altered,
inserted or deleted row breaks the chain and :meth:`RecordStore.verify` names it. Signed checkpoints
(:mod:`markctl.records.keys`) make a consistent rewrite of the whole chain, or a deleted tail, show too.

A registry is made only by :meth:`RecordStore.init` (``markctl records init``): its first event names
the site, whether it is a **training** registry and the site's public key. :meth:`RecordStore.open`
refuses a location that holds no initialised registry and never creates a file, so a misspelt
``--records depto.db`` cannot start an empty register and mark a shipment a second time.
A production registry refuses a ``started`` record from a simulated machine and a training registry
one from a real machine (ISSUE 10 §2), whichever path (CLI, API) wrote it.

Item life cycle (ISSUE 6): ``planned -> started -> marked | failed | unknown``, or
``planned -> exempt`` (ISSUE 15: a temporary import a supervisor exempts from the mark, ITI 8(b); the
``exempted`` record carries the purpose, the expected re-export date, the supervisor and the
reference; nothing is cut). An exempt item is never started: a supervisor's recorded
``exemption-ended`` (with a reason) makes it ``planned`` again before it can be marked. ``started`` is
committed before the first byte reaches a machine; ``unknown`` means the cycle's outcome is not
known (link lost, process killed) and the weapon must be inspected; only a supervisor's recorded
resolution moves it on. A marked item is never started again unless a supervisor records an
override with a reason. Writes are durable before they return (SQLite: WAL + synchronous=FULL).

Events that are not about an item (the registry's creation, checkpoints, API tokens) live in the same
chain under keys starting with ``@``; they never enter the item index.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    String,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Row, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from markctl.errors import ConfigError, DuplicateMarkError, ItemStateError, RecordError
from markctl.records import keys
from markctl.records.schema import GENESIS, api_tokens, chain_head, items, journal, registry

__all__ = [
    "Checkpoint",
    "ItemState",
    "NoRegistryError",
    "ItemView",
    "Problem",
    "Record",
    "RecordStore",
    "RegistryInfo",
    "RegistryModeError",
    "VerifyReport",
    "item_key_of",
]


_MIGRATION_LOCK = threading.Lock()

REGISTRY_KEY = "@registry"
CHECKPOINT_KEY = "@checkpoint"
TOKEN_PREFIX = "@token:"  # noqa: S105 - a key prefix, not a secret
SYSTEM_STATE = "recorded"
_SYSTEM_EVENTS = frozenset({"registry", "checkpoint", "token-created", "token-revoked"})


class ItemState(StrEnum):
    PLANNED = "planned"
    STARTED = "started"
    MARKED = "marked"
    FAILED = "failed"
    UNKNOWN = "unknown"
    EXEMPT = "exempt"  # recorded, not marked: a supervisor's temporary-import exemption (ITI 8(b))


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
    # A supervisor exempts a weapon from the mark (ITI 8(b) temporary import): recorded, never cut.
    "exempted": (frozenset({None, ItemState.PLANNED, ItemState.FAILED}), ItemState.EXEMPT),
    # The weapon stays (or the exemption was wrong): a supervisor ends it, with a reason, so that
    # it can be marked. Never implicit: a batch row without the exemption is refused until then.
    "exemption-ended": (frozenset({ItemState.EXEMPT}), ItemState.PLANNED),
}

#: The facts an ``exempted`` record must carry (data["exemption"]); ``reference`` may be empty.
EXEMPTION_FACTS = ("kind", "purpose", "re_export_by", "recorded_by")


class RegistryModeError(RecordError):
    """A simulated machine on a production registry, or a real one on a training registry."""


class NoRegistryError(RecordError, ConfigError):
    """The location holds no initialised registry (a configuration problem: exit code 2 in the CLI)."""


END_EXEMPTION_HINT = "markctl items end-exemption ITEM_KEY --reason TEXT --supervisor NAME"


def _check_exemption(exemption: Any) -> None:
    """An ``exempted`` record names its kind, purpose, ISO re-export date and supervisor."""
    if not isinstance(exemption, Mapping):
        raise ValueError(
            "an exempted record carries data['exemption'] (kind, purpose, re_export_by, recorded_by)"
        )
    missing = [k for k in EXEMPTION_FACTS if not str(exemption.get(k) or "").strip()]
    if missing:
        raise ValueError(f"an exempted record needs {', '.join(missing)}")
    try:
        date.fromisoformat(str(exemption["re_export_by"]))
    except ValueError:
        raise ValueError(f"re_export_by {exemption['re_export_by']!r} is not a date (YYYY-MM-DD)") from None


def overdue_exemption(data: Mapping[str, Any], today: date) -> str | None:
    """The re-export date of an ``exempted`` record's data if it is before ``today``, else None."""
    exemption = data.get("exemption")
    if not isinstance(exemption, Mapping):
        return None
    try:
        by = date.fromisoformat(str(exemption.get("re_export_by")))
    except ValueError:
        return None
    return by.isoformat() if by < today else None


def item_key_of(weapon_key: str, component: str, mark_profile: str) -> str:
    """The key of one mark on one component of one weapon."""
    return f"{weapon_key}|{component}|{mark_profile}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _canonical(content: Any) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _q(text: str) -> str:
    """``_canonical(text)`` for a string, without the encoder when nothing needs escaping."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text, ensure_ascii=False)


def _body(seq: int, at: str, item: str, event_name: str, state: str, actor: str, data_json: str) -> str:
    # Byte for byte what _canonical() makes of the record (keys sorted), so rows written before this
    # fast path and after it hash alike; data_json is made before the write lock is taken.
    return (
        f'{{"actor":{_q(actor)},"at":{_q(at)},"data":{data_json},"event":{_q(event_name)},'
        f'"item":{_q(item)},"seq":{seq},"state":{_q(state)}}}'
    )


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
class RegistryInfo:
    """Which registry a database is (from its ``registry`` row, checked against the chain by verify)."""

    site: str
    training: bool
    created_at: str
    public_key: str
    where: str

    @property
    def kind(self) -> str:
        return "TRAINING" if self.training else "production"

    def describe(self) -> str:
        return f"{self.kind} registry of site {self.site!r} at {self.where}"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed chain head: ``signature`` signs (site, ``seq``, ``hash``) with the site's key."""

    site: str
    seq: int
    hash: str
    signature: str
    public_key: str
    record_seq: int  # the journal row that holds this checkpoint
    at: str

    @property
    def paper_code(self) -> str:
        return keys.paper_code(self.seq, self.hash)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": "markctl-checkpoint/1",
            "site": self.site,
            "seq": self.seq,
            "hash": self.hash,
            "signature": self.signature,
            "public_key": self.public_key,
            "key_fingerprint": keys.fingerprint(self.public_key),
            "record_seq": self.record_seq,
            "at": self.at,
            "paper_code": self.paper_code,
        }


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of :meth:`RecordStore.verify`."""

    seq: int | None
    kind: str  # altered | inserted-or-deleted | missing | truncated | index | corrupt | head | checkpoint | token
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
    checkpoints: int = 0
    last_checkpoint: int | None = None
    # Leads for an auditor, not damage: weapons still recorded exempt whose re-export date has passed.
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "checkpoints": self.checkpoints,
            "last_checkpoint": self.last_checkpoint,
            "problems": [{"seq": p.seq, "kind": p.kind, "detail": p.detail} for p in self.problems],
            "warnings": list(self.warnings),
        }


class _Compiled:
    """A Core statement compiled once for a dialect: its SQL text and how to lay out its parameters."""

    __slots__ = ("defaults", "order", "sql")

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled)
        self.defaults: dict[str, Any] = dict(compiled.params)
        self.order = list(compiled.positiontup or ()) if compiled.positional else None

    def args(self, params: Mapping[str, Any] | None) -> Any:
        full = {**self.defaults, **params} if params else self.defaults
        return tuple(full[name] for name in self.order) if self.order is not None else full


class _Tx:
    """Statements run on the writer's DBAPI cursor inside one transaction."""

    __slots__ = ("cursor", "sql")

    def __init__(self, cursor: Any, sql: dict[str, _Compiled]) -> None:
        self.cursor = cursor
        self.sql = sql

    def run(self, name: str, params: Mapping[str, Any] | None = None) -> Any:
        statement = self.sql[name]
        self.cursor.execute(statement.sql, statement.args(params))
        return self.cursor

    def first(self, name: str, params: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        row = self.run(name, params).fetchone()
        return None if row is None else tuple(row)

    def one(self, name: str, params: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        row = self.first(name, params)
        if row is None:
            raise RecordError(f"the records database lost a row it needs ({name}); run records verify")
        return row


def _record_of(content: dict[str, Any], seq: int) -> Record:
    return Record(seq, content["at"], content["item"], content["event"], content["state"], content["actor"],
                  content["data"], "", "")  # fmt: skip


def to_url(location: str | Path) -> str:
    """A SQLAlchemy URL from a URL or a file path (SQLite)."""
    text = str(location)
    return text if "://" in text else f"sqlite:///{Path(text).expanduser().resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL (None for other databases or in-memory SQLite)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    if parsed.database.startswith("file:"):  # a URI filename (read-only opening): file:PATH?mode=ro
        return Path(parsed.database.removeprefix("file:").split("?", 1)[0])
    return Path(parsed.database)


def _where(url: str) -> str:
    path = sqlite_path(url)
    if path is not None:
        return str(path)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


class RecordStore:
    """Records in an initialised registry, named by a SQLAlchemy URL or a SQLite path.

    Use :meth:`open` (an existing registry) or :meth:`init` (a new one); the constructor is theirs.
    """

    def __init__(
        self, url: str, *, clock: Callable[[], str] = _now, _creating: bool = False, _read_only: bool = False
    ) -> None:
        self.url = url
        self.read_only = _read_only
        self.where = _where(url)
        self._clock = clock
        self._lock = threading.Lock()  # one writer per process; the chain head serialises processes
        self._writer: PoolProxiedConnection | None = (
            None  # the DBAPI connection for writes, made on first use
        )
        try:
            self.engine: Engine = create_engine(url, future=True)
        except Exception as exc:  # a malformed URL is the user's input
            raise RecordError(f"records URL {url!r}: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_read_only if _read_only else _sqlite_pragmas)
        self._prepare_statements()
        self._migrate(creating=_creating, read_only=_read_only)
        self._registry: RegistryInfo | None = None
        if not _creating:
            self._registry = self._read_registry()
            if self._registry is None:
                self.close()
                raise NoRegistryError(
                    f"{self.where} holds no initialised registry",
                    hint=f"create one with: markctl records init {self.where} --site NAME [--training]",
                )
        if not _read_only:
            self._tighten()

    # --- opening and creating ---------------------------------------------------------------

    @classmethod
    def open(
        cls, location: str | Path, *, clock: Callable[[], str] = _now, read_only: bool = False
    ) -> RecordStore:
        """The registry at a URL or SQLite path; refuses (RecordError) a location with none. Never creates.

        ``read_only`` (SQLite) opens the file without ever writing to it: an archive on read-only media.
        """
        url = to_url(location)
        path = sqlite_path(url)
        if path is not None and not path.is_file():
            raise NoRegistryError(
                f"no registry at {path}",
                hint=f"check the path, or create one with: markctl records init {path} --site NAME",
            )
        if read_only and path is not None:
            url = f"sqlite:///file:{path}?mode=ro&uri=true"
        return cls(url, clock=clock, _read_only=read_only)

    @classmethod
    def init(
        cls,
        location: str | Path,
        *,
        site: str,
        training: bool = False,
        key_path: Path | None = None,
        actor: str = "markctl:init",
        clock: Callable[[], str] = _now,
    ) -> RecordStore:
        """Create a registry: the database (0600), the site key (0600) and the registry's first event."""
        site = site.strip()
        if not site or len(site) > 100:
            raise RecordError("a registry names its site: --site NAME, 1-100 characters")
        url = to_url(location)
        path = sqlite_path(url)
        if key_path is None:
            if path is None:
                raise RecordError(
                    "where should the site key go?", hint="pass --key PATH for a registry that is not a file"
                )
            key_path = default_key_path(path)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Owner-only from the first byte; SQLite gives its -wal and -shm files the database's mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            path.chmod(0o600)
        store = cls(url, clock=clock, _creating=True)
        try:
            existing = store._read_registry()
            if existing is not None:
                raise RecordError(
                    f"{existing.describe()} exists already", hint="open it with --records; init only creates"
                )
            key = keys.generate_key(key_path)
            store._registry = store._create_registry(site, training, keys.public_hex(key), actor)
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self.engine.dispose()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def registry(self) -> RegistryInfo:
        assert self._registry is not None
        return self._registry

    def _migrate(self, *, creating: bool, read_only: bool = False) -> None:
        config = Config()
        config.set_main_option("script_location", "markctl.records:migrations")
        head = ScriptDirectory.from_config(config).get_current_head()
        # Alembic's command API keeps module-level state: one migration at a time per process.
        with _MIGRATION_LOCK:
            try:
                with self.engine.begin() as conn:
                    current = MigrationContext.configure(conn).get_current_revision()
                    if current == head:
                        return
                    if current is None and not creating:
                        # Not a markctl database at all (an empty file, another program's): leave it alone.
                        return
                    if read_only:
                        raise RecordError(
                            f"{self.where} was written by another version of markctl (schema {current})",
                            hint="verify a writable copy of it: markctl brings the copy up to date first",
                        )
                    config.attributes["connection"] = conn
                    command.upgrade(config, "head")
            except DatabaseError as exc:
                raise RecordError(f"cannot open records at {self.where}: {exc.orig}") from exc

    def _tighten(self) -> None:
        """Registry files readable by their owner only (weapon records are sensitive, ISSUE 10 §1)."""
        path = sqlite_path(self.url)
        if path is None:
            return
        with self.engine.connect():  # WAL mode makes the -wal and -shm files
            pass
        for suffix in ("", "-wal", "-shm", "-journal"):
            candidate = path.with_name(path.name + suffix)
            try:
                if candidate.stat().st_mode & 0o077 and candidate.owner() == Path(path).owner():
                    candidate.chmod(0o600)
            except (FileNotFoundError, KeyError):
                continue
            except PermissionError:
                continue

    def _read_registry(self) -> RegistryInfo | None:
        try:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table("registry"):
                    return None
                row = conn.execute(select(registry).where(registry.c.id == 1)).first()
        except DatabaseError as exc:
            raise RecordError(f"cannot open records at {self.where}: {exc.orig}") from exc
        if row is None:
            return None
        return RegistryInfo(row.site, bool(row.training), row.created_at, row.public_key, self.where)

    def _create_registry(self, site: str, training: bool, public_key: str, actor: str) -> RegistryInfo:
        at = self._clock()
        with self._writing() as tx:
            data = _canonical(
                {"site": site, "training": training, "public_key": public_key, "created_at": at}
            )
            record = self._append_row(tx, REGISTRY_KEY, "registry", SYSTEM_STATE, actor, data)
            tx.run("add_registry", {"id": 1, "site": site, "training": training, "created_at": at,
                                    "public_key": public_key, "init_seq": record.seq})  # fmt: skip
            # Tokens of a database made before registries existed come under the chain now.
            for name, token_hash, role, revoked in tx.run("all_tokens").fetchall():
                data = _canonical({"token_hash": token_hash, "role": role, "adopted": True})
                self._append_row(tx, TOKEN_PREFIX + name, "token-created", SYSTEM_STATE, actor, data)
                if revoked:
                    self._append_row(tx, TOKEN_PREFIX + name, "token-revoked", SYSTEM_STATE, actor, "{}")
        return RegistryInfo(site, training, at, public_key, self.where)

    # --- writing -----------------------------------------------------------------------------

    def _prepare_statements(self) -> None:
        # Every write statement is a Core statement compiled once for this database's dialect and then
        # run on one DBAPI connection kept for writing: per event, no statement is built, cached or
        # looked up again (issue 16: that was most of the cost of a write), and the connection is not
        # checked out of the pool and reset each time.
        statements: dict[str, ClauseElement] = {
            "claim": update(chain_head)
            .where(chain_head.c.id == 1)
            .values(seq=chain_head.c.seq + 1)
            .returning(chain_head.c.seq, chain_head.c.hash),
            "set_head": update(chain_head).where(chain_head.c.id == 1).values(hash=bindparam("new_hash")),
            "get_item": select(items.c.state, items.c.attempts, items.c.marks, items.c.last_seq).where(
                items.c.item_key == bindparam("key")
            ),
            "get_row": select(journal.c.body).where(journal.c.seq == bindparam("at_seq")),
            "add_row": insert(journal),
            "add_item": insert(items),
            "set_item": update(items)
            .where(items.c.item_key == bindparam("key"))
            .values(
                state=bindparam("new_state"),
                attempts=bindparam("new_attempts"),
                marks=bindparam("new_marks"),
                last_seq=bindparam("new_seq"),
                updated_at=bindparam("new_at"),
                batch_id=func.coalesce(bindparam("new_batch", type_=String), items.c.batch_id),
            ),
            "add_registry": insert(registry),
            "all_tokens": select(
                api_tokens.c.name, api_tokens.c.token_hash, api_tokens.c.role, api_tokens.c.revoked
            ),
            "token_named": select(api_tokens.c.revoked).where(api_tokens.c.name == bindparam("token_name")),
            "add_token": insert(api_tokens),
            "revoke_token": update(api_tokens)
            .where(api_tokens.c.name == bindparam("token_name"))
            .values(revoked=True),
        }
        self._sql = {name: _Compiled(stmt, self.engine.dialect) for name, stmt in statements.items()}

    @contextmanager
    def _writing(self) -> Iterator[_Tx]:
        """One write transaction on the writer connection; committed (durable) when the block ends."""
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        with self._lock:
            if self._writer is None:
                try:
                    self._writer = self.engine.raw_connection()
                except DatabaseError as exc:
                    raise RecordError(f"cannot write records at {self.where}: {exc.orig}") from exc
            conn = self._writer
            cursor = conn.cursor()
            try:
                yield _Tx(cursor, self._sql)
                conn.commit()
            except BaseException as exc:
                try:
                    conn.rollback()
                except dbapi_error:
                    self._drop_writer()
                if isinstance(exc, dbapi_error):
                    self._drop_writer()  # a broken link is not reused; the next write reconnects
                    raise RecordError(f"cannot write records: {exc}") from exc
                raise
            finally:
                if self._writer is not None:
                    cursor.close()

    def _drop_writer(self) -> None:
        if self._writer is not None:
            try:
                self._writer.invalidate()
            finally:
                self._writer = None

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
        if item_key.startswith("@"):
            raise ValueError("item keys never start with '@' (reserved for the registry's own events)")
        payload = dict(data or {})
        if event_name == "started":
            simulated = payload.get("simulated")
            if not isinstance(simulated, bool):
                raise ValueError("a started record says whether the machine is simulated (data['simulated'])")
            self.check_machine(simulated, str(payload.get("machine", "this machine")))
        data_json = _canonical(payload)  # outside the lock: the only costly serialisation
        with self._writing() as tx:
            return self._append_item(tx, item_key, event_name, actor, payload, data_json, weapon_key, component,
                                     mark_profile, batch_id)  # fmt: skip

    def check_machine(self, simulated: bool, machine: str) -> None:
        """Refuse a simulated machine on a production registry, a real one on a training registry."""
        info = self.registry
        if simulated and not info.training:
            raise RegistryModeError(
                f"{machine} is simulated; the {info.describe()} takes real marks only",
                hint="simulate into a training registry: markctl records init PATH --site NAME --training",
            )
        if not simulated and info.training:
            raise RegistryModeError(
                f"{machine} is a real machine; the {info.describe()} is for simulated marks only",
                hint="mark real weapons into the site's production registry (--records)",
            )

    def _append_row(
        self,
        tx: _Tx,
        item_key: str,
        event_name: str,
        state: str,
        actor: str,
        data_json: str | Callable[[int, str], str],
        payload: dict[str, Any] | None = None,
    ) -> Record:
        """Claim the chain head, add the row, move the head: three statements, hashing in between.

        ``data_json`` may be a function of the claimed (sequence, previous hash): a checkpoint signs
        the head it follows, known only once the head is claimed.
        """
        # The UPDATE takes the write lock (SQLite) / row lock (PostgreSQL) first: it orders appenders.
        seq, prev_hash = tx.one("claim")
        if callable(data_json):
            data_json = data_json(seq - 1, prev_hash)
        at = self._clock()
        body = _body(seq, at, item_key, event_name, state, actor, data_json)
        digest = _hash(prev_hash, body)
        tx.run("add_row", {"seq": seq, "at": at, "item_key": item_key, "event": event_name, "state": state,
                           "actor": actor, "body": body, "prev_hash": prev_hash, "hash": digest})  # fmt: skip
        tx.run("set_head", {"new_hash": digest})
        data = payload if payload is not None else json.loads(data_json)
        return Record(seq, at, item_key, event_name, state, actor, data, prev_hash, digest)

    def _append_item(
        self,
        tx: _Tx,
        item_key: str,
        event_name: str,
        actor: str,
        payload: dict[str, Any],
        data_json: str,
        weapon_key: str | None = None,
        component: str | None = None,
        mark_profile: str | None = None,
        batch_id: str | None = None,
    ) -> Record:
        current = tx.first("get_item", {"key": item_key})
        state_before = ItemState(current[0]) if current is not None else None
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
        if event_name in ("override", "exemption-ended") and not payload.get("reason"):
            raise ValueError(f"an {event_name} record needs a reason")
        if event_name == "exempted":
            _check_exemption(payload.get("exemption"))
        if current is None and (weapon_key is None or component is None or mark_profile is None):
            raise ValueError("a new item needs weapon_key, component and mark_profile")
        assert target is not None
        record = self._append_row(tx, item_key, event_name, target.value, actor, data_json, payload)
        attempts = (current[1] if current is not None else 0) + (event_name == "started")
        marks = (current[2] if current is not None else 0) + (
            target is ItemState.MARKED and event_name != "verified"
        )
        if current is None:
            tx.run("add_item", {"item_key": item_key, "weapon_key": weapon_key, "component": component,
                                "mark_profile": mark_profile, "batch_id": batch_id, "state": target.value,
                                "attempts": attempts, "marks": marks, "last_seq": record.seq,
                                "updated_at": record.at})  # fmt: skip
        else:
            tx.run("set_item", {"key": item_key, "new_state": target.value, "new_attempts": attempts,
                                "new_marks": marks, "new_seq": record.seq, "new_at": record.at,
                                "new_batch": batch_id})  # fmt: skip
        return record

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
        if event_name == "started" and state is ItemState.EXEMPT:
            raise ItemStateError(
                "is recorded exempt from the mark (temporary import): it is not marked",
                item_key=item_key,
                state=state,
                hint=f"if the weapon stays, a supervisor ends the exemption first: {END_EXEMPTION_HINT}",
            )
        if event_name == "exempted" and state is not None:
            raise ItemStateError(
                f"cannot be recorded exempt while {state.value}",
                item_key=item_key,
                state=state,
                hint="an exemption is recorded before a weapon is marked, never after",
            )
        if event_name == "started" and state is ItemState.STARTED:
            raise ItemStateError("is being marked right now", item_key=item_key, state=state)
        shown = state.value if state is not None else "not planned"
        raise ItemStateError(f"cannot record {event_name!r} while {shown}", item_key=item_key, state=state)

    def resolve(
        self,
        item_key: str,
        outcome: str,
        reason: str,
        actor: str,
        *,
        owner_gone: Callable[[Record], bool] | None = None,
    ) -> list[Record]:
        """A supervisor's resolution after inspecting the weapon; returns the rows written.

        From ``unknown`` it is one ``resolved`` row. From ``started`` it is allowed only when
        ``owner_gone`` says the process that started the cycle is certainly gone: then ``unknown``
        and ``resolved`` are written in one transaction (one recorded step, ISSUE 10 §6).
        """
        if outcome not in ("marked", "not-marked"):
            raise ValueError("a resolution says outcome 'marked' or 'not-marked'")
        if not reason.strip():
            raise ValueError("a resolution needs a reason")
        with self._writing() as tx:
            current = tx.first("get_item", {"key": item_key})
            written: list[Record] = []
            if current is not None and current[0] == ItemState.STARTED.value:
                (body,) = tx.one("get_row", {"at_seq": current[3]})
                started = _record_of(json.loads(body), current[3])
                if owner_gone is None or not owner_gone(started):
                    owner = started.data.get("owner") or {}
                    raise ItemStateError(
                        f"is being marked right now (process {owner.get('pid', '?')} on "
                        f"{owner.get('host', '?')}, record {started.seq})",
                        item_key=item_key,
                        state=ItemState.STARTED,
                        hint="resolve it once that process has ended (it is still running, or runs on "
                        "another computer)",
                    )
                data: dict[str, Any] = {
                    "reason": "resolved by a supervisor: the process that started the cycle is gone",
                    "started": started.seq,
                }
                written.append(self._append_item(tx, item_key, "unknown", actor, data, _canonical(data)))
            data = {"outcome": outcome, "reason": reason}
            written.append(self._append_item(tx, item_key, "resolved", actor, data, _canonical(data)))
            return written

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

    # --- API tokens (rows in api_tokens, events in the chain) ---------------------------------

    def add_token(self, name: str, role: str, token_hash: str, actor: str) -> Record:
        """Store a token's hash and record its creation in the chain, in one transaction."""
        with self._writing() as tx:
            if tx.first("token_named", {"token_name": name}) is not None:
                raise ConfigError(f"a token named {name!r} exists already")
            tx.run("add_token", {"token_hash": token_hash, "name": name, "role": role,
                                 "created_at": self._clock(), "revoked": False})  # fmt: skip
            data = _canonical({"token_hash": token_hash, "role": role})
            return self._append_row(tx, TOKEN_PREFIX + name, "token-created", SYSTEM_STATE, actor, data)

    def revoke_token(self, name: str, actor: str) -> bool:
        """Revoke a token (recorded in the chain); False when no token has that name."""
        with self._writing() as tx:
            found = tx.first("token_named", {"token_name": name})
            if found is None:
                return False
            if not found[0]:
                tx.run("revoke_token", {"token_name": name})
                self._append_row(tx, TOKEN_PREFIX + name, "token-revoked", SYSTEM_STATE, actor, "{}")
            return True

    def token_on_chain(self, name: str, token_hash: str, role: str) -> bool:
        """Whether the chain's last event for token ``name`` created it with this hash and role."""
        query = (
            select(journal.c.event, journal.c.body)
            .where(journal.c.item_key == TOKEN_PREFIX + name)
            .order_by(journal.c.seq.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or row.event != "token-created":
            return False
        data = json.loads(row.body)["data"]
        return bool(data.get("token_hash") == token_hash and data.get("role") == role)

    # --- checkpoints --------------------------------------------------------------------------

    def checkpoint(self, key: Ed25519PrivateKey, actor: str) -> Checkpoint:
        """Sign the current head with the site key and record the signature as the chain's next row."""
        info = self.registry
        if keys.public_hex(key) != info.public_key:
            raise RecordError(
                f"this key (fingerprint {keys.fingerprint(keys.public_hex(key))}) is not the key of "
                f"{info.describe()} (fingerprint {keys.fingerprint(info.public_key)})",
                hint="pass --key with the site key made by records init",
            )
        signed: dict[str, Any] = {}

        def sign(seq: int, head_hash: str) -> str:
            signed.update(
                site=info.site, seq=seq, hash=head_hash, signature=keys.sign(key, info.site, seq, head_hash)
            )
            return _canonical(signed)

        with self._writing() as tx:
            record = self._append_row(tx, CHECKPOINT_KEY, "checkpoint", SYSTEM_STATE, actor, sign)
        return Checkpoint(info.site, signed["seq"], signed["hash"], signed["signature"], info.public_key,
                          record.seq, record.at)  # fmt: skip

    def checkpoints(self) -> list[Checkpoint]:
        info = self.registry
        return [
            Checkpoint(
                info.site, r.data["seq"], r.data["hash"], r.data["signature"], info.public_key, r.seq, r.at
            )
            for r in self.history(CHECKPOINT_KEY)
        ]

    # --- reading -----------------------------------------------------------------------------

    def item(self, item_key: str) -> ItemView | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(items).where(items.c.item_key == item_key)).first()
        return None if row is None else _item_view(row)

    def items(
        self,
        *,
        batch_id: str | None = None,
        state: ItemState | None = None,
        weapon_key: str | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[ItemView]:
        """Items in record order, optionally of one batch, in one state, or of one weapon (all its components).

        ``after`` and ``limit`` page through them by their last record number.
        """
        query = select(items).where(items.c.last_seq > after).order_by(items.c.last_seq)
        if batch_id is not None:
            query = query.where(items.c.batch_id == batch_id)
        if weapon_key is not None:
            query = query.where(items.c.weapon_key == weapon_key)
        if state is not None:
            query = query.where(items.c.state == state.value)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_item_view(r) for r in conn.execute(query)]

    def weapons_by_serial(self, serial: str) -> list[str]:
        """Weapon keys whose serial is ``serial`` (any maker), for a lookup by serial alone."""
        wanted = " ".join(serial.upper().split())
        escaped = wanted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = (
            select(items.c.weapon_key)
            .where(items.c.weapon_key.like(f"%|{escaped}", escape="\\"))
            .distinct()
            .order_by(items.c.weapon_key)
        )
        with self.engine.connect() as conn:
            # LIKE ignores ASCII case on SQLite only: the exact suffix test decides everywhere.
            return [k for (k,) in conn.execute(query) if k.endswith(f"|{wanted}")]

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
            for row in conn.execute(query.execution_options(yield_per=1000)):
                yield Record.from_row(row)

    def head(self) -> tuple[int, str]:
        with self.engine.connect() as conn:
            row = conn.execute(select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.id == 1)).one()
        return int(row.seq), str(row.hash)

    # --- verification, backup and export ----------------------------------------------------

    def verify(
        self, *, expect_head: str | None = None, public_key: str | None = None, deep: bool = True
    ) -> VerifyReport:
        """Recompute the chain; name every altered, inserted, deleted or reordered row.

        SQLite's own check of the file runs beside the walk: by default the full ``integrity_check``,
        which also compares every index with its table (a flipped byte in the item index would let a
        lookup miss a marked weapon); ``deep=False`` runs ``quick_check`` (every page and record
        readable, no index comparison), several times faster on a large registry.

        Every checkpoint's signature is checked with the registry's public key (and, when given,
        ``public_key`` from outside the database must be that key). ``expect_head`` is a head kept
        outside (full hash, or a paper code ``SEQ:PREFIX``): it passes when it lies anywhere on the chain.
        """
        return _Verifier(self, expect_head, public_key, deep).run()

    def backup(self, dest: Path) -> Path:
        """An online copy of a SQLite registry (the backup API: consistent while writers go on)."""
        path = sqlite_path(self.url)
        if path is None:
            raise RecordError(
                f"records backup copies SQLite registries; {self.where} is {self.engine.dialect.name}",
                hint="use pg_dump --format=custom for PostgreSQL, then records verify on a restored copy",
            )
        if dest.exists():
            raise RecordError(f"{dest} exists already", hint="backups never overwrite: choose a new name")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(dest, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        source = sqlite3.connect(path)
        target = sqlite3.connect(dest)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            target.close()
            source.close()
        dest.chmod(0o600)
        return dest

    def export(self, out: TextIO, fmt: str = "json") -> int:
        """Write every record as JSON (a list) or CSV (formula-safe cells); returns the count."""
        count = 0
        if fmt == "json":
            out.write("[")
            for count, record in enumerate(self.records(), start=1):
                out.write(("\n  " if count == 1 else ",\n  ") + json.dumps(record.as_dict(), sort_keys=True))
            out.write("\n]\n" if count else "]\n")
            return count
        if fmt == "csv":
            from markctl.records.register import csv_safe

            writer = csv.writer(out)
            writer.writerow(["seq", "at", "item_key", "event", "state", "actor", "data", "prev_hash", "hash"])
            for r in self.records():
                count += 1
                writer.writerow(
                    csv_safe(
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
                )
            return count
        raise ValueError(f"export format must be json or csv, got {fmt!r}")

    def export_text(self, fmt: str = "json") -> str:
        buffer = io.StringIO()
        self.export(buffer, fmt)
        return buffer.getvalue()


def default_key_path(db: Path) -> Path:
    """Where ``records init`` puts the site key of a SQLite registry unless told otherwise."""
    return db.with_name(db.name + ".key")


class _Verifier:
    """One pass over the journal in batches; every check that needs a row is made on that pass."""

    def __init__(
        self, store: RecordStore, expect_head: str | None, public_key: str | None, deep: bool
    ) -> None:
        self.store = store
        self.deep = deep
        self.problems: list[Problem] = []
        self.expect_seq: int | None = None
        self.expect_hash: str | None = None
        self.expect_found = expect_head is None
        if expect_head is not None:
            seq_text, sep, hash_text = expect_head.strip().partition(":")
            if sep and seq_text.isdigit():
                self.expect_seq, self.expect_hash = int(seq_text), hash_text.lower()
            else:
                self.expect_hash = expect_head.strip().lower()
            if len(self.expect_hash) < 16 or any(c not in "0123456789abcdef" for c in self.expect_hash):
                raise RecordError(
                    f"--expect-head {expect_head!r} is not a chain head",
                    hint="give the 64-hex-digit hash, or the paper code SEQ:HASH-PREFIX (16+ hex digits)",
                )
        self.outside_key = public_key
        self.today = date.today()
        self.exempt: dict[str, tuple[str, int]] = {}  # item -> (past re-export date, record)
        self.checkpoints = 0
        self.last_checkpoint: int | None = None

    def run(self) -> VerifyReport:
        store = self.store
        problems = self.problems
        replay: dict[str, tuple[str, int]] = {}
        tokens: dict[str, tuple[str, str, bool]] = {}
        registry_event: dict[str, Any] | None = None
        prev, expected, rows, last_seq = GENESIS, 1, 0, 0
        sha256 = hashlib.sha256
        integrity: _IntegrityCheck | None = None
        sqlite = store.engine.dialect.name == "sqlite"
        try:
            options = {} if sqlite else {"isolation_level": "REPEATABLE READ"}
            with store.engine.connect().execution_options(**options) as conn:
                if sqlite:
                    # Bytes flipped in an index page never reach the chain walk; SQLite's own check sees
                    # them. It runs on its own connection in a thread (SQLite releases the GIL), beside the walk.
                    integrity = _IntegrityCheck(
                        store.engine, "integrity_check" if self.deep else "quick_check"
                    )
                    conn.exec_driver_sql("BEGIN")  # one snapshot for the walk, the head and the index
                for seq, at, key, ev, state, actor, body, prev_hash, digest in _journal_rows(conn, sqlite):
                    rows += 1
                    if seq != expected:
                        if seq > expected:
                            problems.append(Problem(seq, "missing", f"rows {expected}..{seq - 1} are gone"))
                        else:
                            problems.append(Problem(seq, "inserted-or-deleted", "sequence runs backwards"))
                    if prev_hash != prev:
                        problems.append(
                            Problem(
                                seq, "inserted-or-deleted", "does not follow the row before it in the chain"
                            )
                        )
                    if sha256(f"{prev_hash}\n{body}".encode()).hexdigest() != digest:
                        problems.append(Problem(seq, "altered", "content does not match its hash"))
                    # The body is canonical JSON with sorted keys: the columns are its fixed prefix and
                    # suffix around "data". Text that JSON escapes fails this cheap test and is parsed.
                    if not (
                        body.startswith(f'{{"actor":"{actor}","at":"{at}","data":')
                        and body.endswith(f',"event":"{ev}","item":"{key}","seq":{seq},"state":"{state}"}}')
                    ):
                        problems.extend(_check_columns(seq, at, key, ev, state, actor, body))
                    if key[:1] == "@":
                        registry_event = self._system(seq, key, ev, body, prev_hash, tokens, registry_event)
                    else:
                        replay[key] = (state, seq)
                        if ev == "exempted":
                            self._exempted(seq, key, body)
                    if not self.expect_found and self.expect_hash is not None:
                        self.expect_found = digest.startswith(self.expect_hash) and (
                            self.expect_seq is None or self.expect_seq == seq
                        )
                    prev, expected, last_seq = digest, seq + 1, seq
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
                self._check_index(conn, replay)
                self._check_registry(conn, registry_event)
                self._check_tokens(conn, tokens)
        except DatabaseError as exc:
            problems.append(Problem(None, "corrupt", f"the database cannot be read: {exc.orig}"))
        except store.engine.dialect.loaded_dbapi.Error as exc:
            problems.append(Problem(None, "corrupt", f"the database cannot be read: {exc}"))
        finally:
            if integrity is not None:
                verdict = integrity.result()
                if verdict != ["ok"]:
                    problems.insert(0, Problem(None, "corrupt", "; ".join(verdict[:3])))
        if not self.expect_found:
            problems.append(
                Problem(last_seq, "head", f"the head kept outside ({self.expect_hash}) is not on this chain")
            )
        warnings = tuple(
            f"{key}: recorded exempt (temporary import, record {seq}) but its re-export date {by} has passed: "
            "check that the weapon left, or end the exemption and mark it"
            for key, (by, seq) in sorted(self.exempt.items())
            if replay.get(key, ("", 0))[0] == ItemState.EXEMPT.value
        )
        return VerifyReport(rows, last_seq, prev, tuple(problems), self.checkpoints, self.last_checkpoint,
                            warnings)  # fmt: skip

    def _exempted(self, seq: int, key: str, body: str) -> None:
        """Note an exemption whose re-export date has passed (the last exemption of the item counts)."""
        try:
            data = json.loads(body)["data"]
        except (ValueError, KeyError, TypeError):
            return  # an unreadable body is reported by the hash and column checks
        by = overdue_exemption(data, self.today) if isinstance(data, dict) else None
        if by is not None:
            self.exempt[key] = (by, seq)
        else:
            self.exempt.pop(key, None)

    def _system(
        self,
        seq: int,
        key: str,
        ev: str,
        body: str,
        prev_hash: str,
        tokens: dict[str, tuple[str, str, bool]],
        registry_event: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        try:
            data = json.loads(body)["data"]
        except (ValueError, KeyError):
            self.problems.append(Problem(seq, "altered", "body is not valid JSON"))
            return registry_event
        if ev not in _SYSTEM_EVENTS:
            self.problems.append(Problem(seq, "altered", f"unknown registry event {ev!r}"))
        elif ev == "registry":
            if registry_event is not None:
                self.problems.append(Problem(seq, "altered", "a second registry-creation event"))
                return registry_event
            return {**data, "seq": seq}
        elif ev == "checkpoint":
            self._checkpoint(seq, data, prev_hash, registry_event)
        elif key.startswith(TOKEN_PREFIX):
            name = key[len(TOKEN_PREFIX) :]
            if ev == "token-created":
                tokens[name] = (str(data.get("token_hash")), str(data.get("role")), False)
            elif name in tokens:
                tokens[name] = (tokens[name][0], tokens[name][1], True)
        return registry_event

    def _checkpoint(
        self, seq: int, data: dict[str, Any], prev_hash: str, registry_event: dict[str, Any] | None
    ) -> None:
        self.checkpoints += 1
        if registry_event is None:
            self.problems.append(Problem(seq, "checkpoint", "a checkpoint before the registry was created"))
            return
        public = str(registry_event.get("public_key", ""))
        # A checkpoint signs the head as it was just before it: the row right before it in the chain.
        if data.get("seq") != seq - 1 or data.get("hash") != prev_hash:
            self.problems.append(
                Problem(seq, "checkpoint", f"signs row {data.get('seq')}, which is not the row before it")
            )
        elif not keys.signature_ok(
            public, str(registry_event.get("site")), seq - 1, prev_hash, str(data.get("signature"))
        ):
            self.problems.append(
                Problem(seq, "checkpoint", "the signature is not the site key's: the chain was rewritten")
            )
        else:
            self.last_checkpoint = seq

    def _check_index(self, conn: Connection, replay: dict[str, tuple[str, int]]) -> None:
        seen: set[str] = set()
        for item in conn.execute(
            select(items.c.item_key, items.c.state, items.c.last_seq).execution_options(yield_per=5000)
        ):
            seen.add(item.item_key)
            if replay.get(item.item_key) != (item.state, item.last_seq):
                self.problems.append(
                    Problem(item.last_seq, "index", f"item {item.item_key} state differs from its journal")
                )
        for key in replay.keys() - seen:
            self.problems.append(
                Problem(replay[key][1], "index", f"item {key} is missing from the item index")
            )

    def _check_registry(self, conn: Connection, registry_event: dict[str, Any] | None) -> None:
        row = conn.execute(select(registry).where(registry.c.id == 1)).first()
        if registry_event is None:
            self.problems.append(Problem(None, "registry", "the chain has no registry-creation event"))
            return
        if row is None or (row.site, bool(row.training), row.public_key, row.init_seq) != (
            registry_event.get("site"),
            registry_event.get("training"),
            registry_event.get("public_key"),
            registry_event.get("seq"),
        ):
            self.problems.append(
                Problem(
                    registry_event.get("seq"),
                    "registry",
                    "the registry row (site, training, key) differs from the chain's registry-creation event",
                )
            )
        if self.outside_key is not None and self.outside_key != registry_event.get("public_key"):
            self.problems.append(
                Problem(
                    registry_event.get("seq"),
                    "checkpoint",
                    f"the chain's site key ({keys.fingerprint(str(registry_event.get('public_key')))}) is not the "
                    f"key kept outside ({keys.fingerprint(self.outside_key)}): the chain was rewritten",
                )
            )

    def _check_tokens(self, conn: Connection, tokens: dict[str, tuple[str, str, bool]]) -> None:
        seen: set[str] = set()
        for row in conn.execute(select(api_tokens)):
            seen.add(row.name)
            if tokens.get(row.name) != (row.token_hash, row.role, bool(row.revoked)):
                self.problems.append(
                    Problem(
                        None, "token", f"API token {row.name!r} ({row.role}) differs from its recorded events"
                    )
                )
        for name in tokens.keys() - seen:
            self.problems.append(Problem(None, "token", f"API token {name!r} was recorded but is gone"))


_JOURNAL_SQL = (
    "SELECT seq, at, item_key, event, state, actor, body, prev_hash, hash FROM journal ORDER BY seq"
)


def _journal_rows(conn: Connection, sqlite: bool) -> Iterator[Any]:
    """Every journal row in chain order, in batches: the DBAPI cursor itself for SQLite (no per-row
    wrapping), a server-side stream elsewhere (PostgreSQL would otherwise load the whole table)."""
    if sqlite:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.arraysize = 5000
        try:
            cursor.execute(_JOURNAL_SQL)
            while batch := cursor.fetchmany():
                yield from batch
        finally:
            cursor.close()
        return
    query = select(
        journal.c.seq, journal.c.at, journal.c.item_key, journal.c.event, journal.c.state,
        journal.c.actor, journal.c.body, journal.c.prev_hash, journal.c.hash,
    ).order_by(journal.c.seq)  # fmt: skip
    yield from conn.execute(query.execution_options(yield_per=5000))


class _IntegrityCheck:
    """SQLite's check of the file, on a connection of its own, in a thread, while the chain is walked."""

    def __init__(self, engine: Engine, pragma: str) -> None:
        self._verdict: list[str] = []
        self._engine = engine
        self._pragma = pragma
        self._thread = threading.Thread(target=self._run, name="records-integrity-check", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            raw = self._engine.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute(f"PRAGMA {self._pragma}")
                self._verdict = [str(row[0]) for row in cursor.fetchall()]
            finally:
                raw.close()
        except Exception as exc:  # a file too damaged to check: the verdict says so
            self._verdict = [f"the database cannot be checked: {exc}"]

    def result(self) -> list[str]:
        self._thread.join()
        return self._verdict


def _check_columns(seq: int, at: str, key: str, ev: str, state: str, actor: str, body: str) -> list[Problem]:
    try:
        content = json.loads(body)
    except ValueError:
        return [Problem(seq, "altered", "body is not valid JSON")]
    expected = {"seq": seq, "at": at, "item": key, "event": ev, "state": state, "actor": actor}
    wrong = [k for k, v in expected.items() if content.get(k) != v]
    if not wrong and _canonical(content) != body:
        return [Problem(seq, "altered", "body is not in canonical form")]
    return (
        [Problem(seq, "altered", f"column(s) {', '.join(wrong)} differ from the hashed content")]
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


def _sqlite_read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()
