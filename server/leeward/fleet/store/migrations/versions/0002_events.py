"""events: every change to an environment, recorded by triggers in the same transaction

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 09:40:00

Triggers, not application code, record the events, so that no write path (the allocator, group
commit, an operator's CLI, another replica) can change an environment without its event. The
snapshot holds the user-visible columns (never the agent token's digest); a migration that adds
such a column to `environments` must recreate these triggers.

`position` is the id clients see and resume from; it must grow in commit order. SQLite has one
writer at a time, so the trigger assigns it. PostgreSQL commits concurrent transactions in any
order, so the trigger leaves it NULL and the fleet's sequencer numbers committed rows under an
advisory lock (leeward.fleet.events).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from leeward.fleet.store import triggers

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SNAPSHOT = [
    *("id", "name", "kind", "flavor", "profile", "cpus", "memory_gib", "gpus", "region"),
    *("host", "address", "ssh_port", "state", "status_message", "owner", "lifespan"),
    *("expires_at", "created_at", "updated_at", "ready_at", "last_seen_at", "deleted_at"),
]
"""The columns an event carries."""

UNNOTICED = {"updated_at", "last_seen_at"}
"""Changes to these alone (heartbeats, touches) make no event."""


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("environment_id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("snapshot", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_position"), "events", ["position"], unique=True)
    op.create_index("ix_events_owner_position", "events", ["owner", "position"])
    op.create_index(op.f("ix_events_at"), "events", ["at"])
    triggers.create(op, SNAPSHOT, UNNOTICED)


def downgrade() -> None:
    triggers.drop(op)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS environments_record_event()")
    op.drop_table("events")
