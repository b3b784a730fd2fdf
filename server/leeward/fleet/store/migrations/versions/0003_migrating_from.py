"""migrating_from: the host an environment leaves during a live migration; events carry it

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from leeward.fleet.store import triggers

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BEFORE = [
    *("id", "name", "kind", "flavor", "profile", "cpus", "memory_gib", "gpus", "region"),
    *("host", "address", "ssh_port", "state", "status_message", "owner", "lifespan"),
    *("expires_at", "created_at", "updated_at", "ready_at", "last_seen_at", "deleted_at"),
]
SNAPSHOT = [*BEFORE, "migrating_from"]
UNNOTICED = {"updated_at", "last_seen_at"}


def upgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("migrating_from", sa.String(length=64), nullable=True))
    triggers.drop(op)
    triggers.create(op, SNAPSHOT, UNNOTICED)


def downgrade() -> None:
    triggers.drop(op)
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("migrating_from")
    triggers.create(op, BEFORE, UNNOTICED)
