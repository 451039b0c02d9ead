"""Registry identity (site, training or production, site key), and an index for the register view.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Empty until ``markctl records init`` fills it: a database without this row is refused.
    op.create_table(
        "registry",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("site", sa.String(100), nullable=False),
        sa.Column("training", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("init_seq", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_registry_single_row"),
    )
    # The register walks weapons in key order and each item's journal rows in sequence: with this index
    # and ix_journal_item that is one ordered scan, with no sort of the whole journal (issue 10 §3).
    op.create_index("ix_items_weapon_item", "items", ["weapon_key", "item_key"])


def downgrade() -> None:
    raise RuntimeError("the records schema cannot be downgraded: it would destroy mark records")
