"""profiles: versioned profile files (content stored once per hash), the user's config; each
environment's setup items and sync status, which events carry

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from leeward.fleet.store import triggers

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BEFORE = [
    *("id", "name", "kind", "flavor", "profile", "cpus", "memory_gib", "gpus", "region"),
    *("host", "address", "ssh_port", "state", "status_message", "owner", "lifespan"),
    *("expires_at", "created_at", "updated_at", "ready_at", "last_seen_at", "deleted_at"),
    "migrating_from",
]
SNAPSHOT = [*BEFORE, "setup", "sync"]
UNNOTICED = {"updated_at", "last_seen_at"}


def upgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("setup", sa.Text(), nullable=True))
        batch.add_column(sa.Column("sync", sa.Text(), nullable=True))
    triggers.drop(op)
    triggers.create(op, SNAPSHOT, UNNOTICED)
    op.create_table(
        "profile_blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_profile_blobs")),
    )
    op.create_table(
        "profile_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("changed", sa.Text(), nullable=False),
        sa.Column("removed", sa.Text(), nullable=False),
        sa.Column("config", sa.Text(), nullable=True),
        sa.Column("config_changed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user"],
            ["users.name"],
            name=op.f("fk_profile_versions_user_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_versions")),
        sa.UniqueConstraint("user", "version", name="user_version"),
    )
    op.create_table(
        "profile_files",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("changed_in", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sha256"],
            ["profile_blobs.sha256"],
            name=op.f("fk_profile_files_sha256_profile_blobs"),
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["profile_versions.id"],
            name=op.f("fk_profile_files_version_id_profile_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_files")),
        sa.UniqueConstraint("version_id", "path", name="version_path"),
    )
    with op.batch_alter_table("profile_files") as batch:
        batch.create_index(batch.f("ix_profile_files_version_id"), ["version_id"], unique=False)
        batch.create_index(batch.f("ix_profile_files_sha256"), ["sha256"], unique=False)


def downgrade() -> None:
    op.drop_table("profile_files")
    op.drop_table("profile_versions")
    op.drop_table("profile_blobs")
    triggers.drop(op)
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("sync")
        batch.drop_column("setup")
    triggers.create(op, BEFORE, UNNOTICED)
