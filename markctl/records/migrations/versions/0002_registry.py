"""Registry identity: which site a database belongs to and whether it is a training registry.

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


def downgrade() -> None:
    raise RuntimeError("the records schema cannot be downgraded: it would destroy mark records")
