"""Alembic migrations of the records database (script_location ``markctl.records:migrations``)."""
