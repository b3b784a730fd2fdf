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
    if op.get_bind().dialect.name == "postgresql":
        _postgres_triggers()
    else:
        _sqlite_triggers()


def _changed(different: str) -> str:
    return " OR ".join(f"OLD.{c} {different} NEW.{c}" for c in SNAPSHOT if c not in UNNOTICED)


def _sqlite_triggers() -> None:
    snapshot = ", ".join(f"'{c}', NEW.{c}" for c in SNAPSHOT)
    # Built from the constant column list above, not from input.
    record = (
        "INSERT INTO events (position, environment_id, owner, at, snapshot) VALUES ("  # noqa: S608
        "(SELECT COALESCE(MAX(position), 0) + 1 FROM events), "
        f"NEW.id, NEW.owner, NEW.updated_at, json_object({snapshot}));"
    )
    op.execute(
        f"CREATE TRIGGER environments_insert_event AFTER INSERT ON environments BEGIN {record} END"
    )
    op.execute(
        f"CREATE TRIGGER environments_update_event AFTER UPDATE ON environments "
        f"WHEN {_changed('IS NOT')} BEGIN {record} END"
    )


def _postgres_triggers() -> None:
    snapshot = ", ".join(f"'{c}', NEW.{c}" for c in SNAPSHOT)
    op.execute(
        "CREATE FUNCTION environments_record_event() RETURNS trigger AS $$ BEGIN "  # noqa: S608
        "INSERT INTO events (environment_id, owner, at, snapshot) VALUES "
        f"(NEW.id, NEW.owner, NEW.updated_at, json_build_object({snapshot})::text); "
        "RETURN NULL; END $$ LANGUAGE plpgsql"
    )
    op.execute(
        "CREATE TRIGGER environments_insert_event AFTER INSERT ON environments "
        "FOR EACH ROW EXECUTE FUNCTION environments_record_event()"
    )
    op.execute(
        "CREATE TRIGGER environments_update_event AFTER UPDATE ON environments "
        f"FOR EACH ROW WHEN ({_changed('IS DISTINCT FROM')}) "
        "EXECUTE FUNCTION environments_record_event()"
    )


def downgrade() -> None:
    on = " ON environments" if op.get_bind().dialect.name == "postgresql" else ""
    op.execute(f"DROP TRIGGER IF EXISTS environments_update_event{on}")
    op.execute(f"DROP TRIGGER IF EXISTS environments_insert_event{on}")
    if on:
        op.execute("DROP FUNCTION IF EXISTS environments_record_event()")
    op.drop_table("events")
