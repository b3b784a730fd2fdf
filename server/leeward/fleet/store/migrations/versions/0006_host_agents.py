"""host agents: each host's token digest, where its agent is reached, when it was last heard,
whether it is reachable and what it reported; the fleet's command key

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("token_digest", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reachable", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("report", sa.Text(), nullable=True))
        batch.create_unique_constraint(op.f("uq_hosts_token_digest"), ["token_digest"])
    with op.batch_alter_table("ssh_authority") as batch:
        batch.add_column(sa.Column("command_key", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ssh_authority") as batch:
        batch.drop_column("command_key")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_constraint(op.f("uq_hosts_token_digest"), type_="unique")
        for column in ("report", "reachable", "last_seen_at", "url", "token_expires_at"):
            batch.drop_column(column)
        batch.drop_column("token_digest")
