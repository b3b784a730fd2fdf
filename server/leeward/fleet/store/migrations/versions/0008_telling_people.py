"""telling people: announcements and their dismissals, notifications and their deliveries per
sink, users' preferences, sinks' pauses; what keeps an environment alive (idle stop)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from leeward.fleet.store import triggers

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)

BEFORE = [
    *("id", "name", "kind", "flavor", "profile", "cpus", "memory_gib", "gpus", "region"),
    *("host", "address", "ssh_port", "state", "status_message", "owner", "lifespan"),
    *("expires_at", "created_at", "updated_at", "ready_at", "last_seen_at", "deleted_at"),
    *("migrating_from", "setup", "sync", "backup_at", "backup_status", "moved_to"),
]
SNAPSHOT = [
    *BEFORE,
    *("active_at", "kept_by", "idle_stop_at", "stopped_at", "dormant_delete_at"),
]
UNNOTICED_BEFORE = {"updated_at", "last_seen_at"}
# Activity moves with every heartbeat of a busy environment: carried in events, never one.
UNNOTICED = {*UNNOTICED_BEFORE, "active_at", "kept_by", "idle_stop_at"}


def _user(table: str, cascade: bool = True) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["user"],
        ["users.name"],
        name=op.f(f"fk_{table}_user_users"),
        ondelete="CASCADE" if cascade else "RESTRICT",
    )


def upgrade() -> None:
    op.create_table(
        "announcements",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("starts_at", Timestamp, nullable=False),
        sa.Column("ends_at", Timestamp, nullable=True),
        sa.Column("actions", sa.Text(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("withdrawn_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_announcements")),
    )
    op.create_index(op.f("ix_announcements_starts_at"), "announcements", ["starts_at"])
    op.create_table(
        "announcement_dismissals",
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("announcement_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("dismissed_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["announcement_id"],
            ["announcements.id"],
            name=op.f("fk_announcement_dismissals_announcement_id_announcements"),
            ondelete="CASCADE",
        ),
        _user("announcement_dismissals"),
        sa.PrimaryKeyConstraint("user", "announcement_id", name=op.f("pk_announcement_dismissals")),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=True),
        sa.Column("environment_id", sa.String(length=32), nullable=True),
        sa.Column("actions", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("seen_at", Timestamp, nullable=True),
        _user("notifications"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("key", name=op.f("uq_notifications_key")),
    )
    op.create_index("ix_notifications_user_id", "notifications", ["user", "id"])
    op.create_index(op.f("ix_notifications_environment_id"), "notifications", ["environment_id"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("notification_id", sa.Integer(), nullable=False),
        sa.Column("sink", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=True),
        sa.Column("leased_until", Timestamp, nullable=True),
        sa.Column("leased_by", sa.String(length=128), nullable=True),
        sa.Column("sent_at", Timestamp, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_deliveries_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("notification_id", "sink", name=op.f("uq_deliveries_notification_id")),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["state", "next_attempt_at"])
    op.create_table(
        "notification_preferences",
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("routes", sa.Text(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        _user("notification_preferences"),
        sa.PrimaryKeyConstraint("user", name=op.f("pk_notification_preferences")),
    )
    op.create_table(
        "sinks",
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("paused_by", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sinks")),
    )
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("active_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("kept_by", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("idle_stop_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("stopped_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("dormant_delete_at", Timestamp, nullable=True))
        batch.create_index(op.f("ix_environments_idle_stop_at"), ["idle_stop_at"])
    triggers.drop(op)
    triggers.create(op, SNAPSHOT, UNNOTICED)


def downgrade() -> None:
    triggers.drop(op)
    with op.batch_alter_table("environments") as batch:
        batch.drop_index(op.f("ix_environments_idle_stop_at"))
        for column in ("dormant_delete_at", "stopped_at", "idle_stop_at", "kept_by", "active_at"):
            batch.drop_column(column)
    for table in (
        "sinks",
        "notification_preferences",
        "deliveries",
        "notifications",
        "announcement_dismissals",
        "announcements",
    ):
        op.drop_table(table)
    triggers.create(op, BEFORE, UNNOTICED_BEFORE)
