"""backups: each devserver's restic repository and key, its backup runs, cold moves, and the
deadline of a host's decommission

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from leeward.fleet.store import triggers

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)

BEFORE = [
    *("id", "name", "kind", "flavor", "profile", "cpus", "memory_gib", "gpus", "region"),
    *("host", "address", "ssh_port", "state", "status_message", "owner", "lifespan"),
    *("expires_at", "created_at", "updated_at", "ready_at", "last_seen_at", "deleted_at"),
    *("migrating_from", "setup", "sync"),
]
SNAPSHOT = [*BEFORE, "backup_at", "backup_status", "moved_to"]
UNNOTICED = {"updated_at", "last_seen_at"}


def upgrade() -> None:
    op.create_table(
        "backup_repositories",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("password", sa.Text(), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("released_at", Timestamp, nullable=True),
        sa.Column("pruned_at", Timestamp, nullable=True),
        sa.ForeignKeyConstraint(
            ["owner"],
            ["users.name"],
            name=op.f("fk_backup_repositories_owner_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_repositories")),
    )
    op.create_index(
        op.f("ix_backup_repositories_owner"), "backup_repositories", ["owner"], unique=False
    )
    op.create_table(
        "backups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("repository_id", sa.String(length=32), nullable=False),
        sa.Column("environment_id", sa.String(length=32), nullable=False),
        sa.Column("environment_name", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("snapshot", sa.String(length=64), nullable=True),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("files_new", sa.BigInteger(), nullable=False),
        sa.Column("files_changed", sa.BigInteger(), nullable=False),
        sa.Column("files_unmodified", sa.BigInteger(), nullable=False),
        sa.Column("total_files", sa.BigInteger(), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("data_added", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("warnings", sa.Text(), nullable=False),
        sa.Column("forgotten_at", Timestamp, nullable=True),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["backup_repositories.id"],
            name=op.f("fk_backups_repository_id_backup_repositories"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backups")),
    )
    op.create_index(op.f("ix_backups_environment_id"), "backups", ["environment_id"])
    op.create_index("ix_backups_repository_state", "backups", ["repository_id", "state"])
    op.create_table(
        "moves",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("environment_id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("flavor", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("backup_id", sa.Integer(), nullable=True),
        sa.Column("target_id", sa.String(length=32), nullable=True),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moves")),
    )
    op.create_index(op.f("ix_moves_environment_id"), "moves", ["environment_id"])
    op.create_index(op.f("ix_moves_state"), "moves", ["state"])
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("backup_repository", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("restore_from", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("moved_to", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("backup_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("backup_status", sa.Text(), nullable=True))
        batch.create_index(op.f("ix_environments_backup_repository"), ["backup_repository"])
        batch.create_foreign_key(
            op.f("fk_environments_backup_repository_backup_repositories"),
            "backup_repositories",
            ["backup_repository"],
            ["id"],
        )
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("decommission_by", Timestamp, nullable=True))
    triggers.drop(op)
    triggers.create(op, SNAPSHOT, UNNOTICED)


def downgrade() -> None:
    triggers.drop(op)
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("decommission_by")
    with op.batch_alter_table("environments") as batch:
        batch.drop_constraint(
            op.f("fk_environments_backup_repository_backup_repositories"), type_="foreignkey"
        )
        batch.drop_index(op.f("ix_environments_backup_repository"))
        for column in ("backup_status", "backup_at", "moved_to", "restore_from"):
            batch.drop_column(column)
        batch.drop_column("backup_repository")
    op.drop_table("moves")
    op.drop_table("backups")
    op.drop_table("backup_repositories")
    triggers.create(op, BEFORE, UNNOTICED)
