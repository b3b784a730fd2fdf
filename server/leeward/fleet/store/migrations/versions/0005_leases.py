"""leases: which fleet replica holds an environment's work or a loop, until when

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 06:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("ticket", sa.String(length=160), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_index(op.f("ix_leases_until"), "leases", ["until"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_leases_until"), table_name="leases")
    op.drop_table("leases")
