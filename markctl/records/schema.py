"""Tables of the records database (SQLAlchemy Core; portable SQL, no SQLite-only features).

* ``journal``: the append-only, hash-chained log of every mark event. ``body`` is the canonical
  JSON that was hashed; the other columns repeat some of it for indexing and are checked against
  it by ``verify``.
* ``chain_head``: one row, the last sequence number and hash. Every append updates it first,
  which serialises writers on SQLite and PostgreSQL alike, and lets ``verify`` notice rows removed
  from the end of the chain.
* ``items``: the current state of each item (one mark on one component of one weapon), a derived
  index kept in the same transaction as the journal, so the controller can refuse a duplicate
  mark without replaying history. ``verify`` replays the journal and compares.
* ``api_tokens``: hashed API tokens and their roles (the service's access control). Every token
  created or revoked is also a journal event, so ``verify`` catches a token written straight into
  this table, and the service refuses it.
* ``registry``: one row saying which registry this is (site, training or production, the site's
  public key). A copy of the chain's first event, kept for cheap reads and compared with the chain
  by ``verify``. Without this row the database is not a registry and markctl refuses it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

GENESIS = "0" * 64

journal = Table(
    "journal",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", String(32), nullable=False),
    Column("item_key", String(400), nullable=False),
    Column("event", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Index("ix_journal_item", "item_key", "seq"),
)

chain_head = Table(
    "chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    CheckConstraint("id = 1", name="ck_chain_head_single_row"),
)

items = Table(
    "items",
    metadata,
    Column("item_key", String(400), primary_key=True),
    Column("weapon_key", String(300), nullable=False),
    Column("component", String(40), nullable=False),
    Column("mark_profile", String(40), nullable=False),
    Column("batch_id", String(64), nullable=True),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("marks", Integer, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("updated_at", String(32), nullable=False),
    Index("ix_items_weapon", "weapon_key"),
    Index("ix_items_batch", "batch_id"),
    Index("ix_items_weapon_item", "weapon_key", "item_key"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("revoked", Boolean, nullable=False),
)

registry = Table(
    "registry",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("site", String(100), nullable=False),
    Column("training", Boolean, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("public_key", String(64), nullable=False),
    Column("init_seq", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="ck_registry_single_row"),
)
