"""Alembic environment: migrations run on the connection markctl hands over."""

from __future__ import annotations

from alembic import context

from markctl.records.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - markctl always passes its connection
    raise RuntimeError("markctl runs its migrations through markctl.records.RecordStore")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
