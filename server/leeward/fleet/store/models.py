"""The fleet's tables. The schema is managed by alembic (migrations/ beside this file)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on PostgreSQL and on SQLite (which keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Timestamp = UTCDateTime()


class UserRow(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class TokenRow(Base):
    """A bearer token: only its SHA-256 is kept (tokens are 256 random bits, so no stretching)."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)


class AuthorityRow(Base):
    """The SSH CA's keys, shared by every replica of the fleet."""

    __tablename__ = "ssh_authority"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_ca_key: Mapped[str] = mapped_column(Text)
    user_ca_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    command_key: Mapped[str | None] = mapped_column(
        Text, nullable=True, doc="Ed25519 PEM: signs the fleet's commands to host agents."
    )


class HostRow(Base):
    """A placement target. Capacity comes from the config; usage is derived from environments."""

    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    region: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16))
    cpus: Mapped[int] = mapped_column(Integer)
    memory_gib: Mapped[int] = mapped_column(Integer)
    gpus: Mapped[int] = mapped_column(Integer)
    token_digest: Mapped[str | None] = mapped_column(
        String(64), unique=True, nullable=True, doc="SHA-256 of its host agent's token."
    )
    token_expires_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    url: Mapped[str | None] = mapped_column(
        Text, nullable=True, doc="Where its host agent said the fleet reaches it."
    )
    last_seen_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    reachable: Mapped[bool | None] = mapped_column(
        Boolean,
        nullable=True,
        doc="Whether its host agent was heard within the heartbeat window; NULL where the "
        "fleet starts environments itself (the in-process provider).",
    )
    report: Mapped[str | None] = mapped_column(
        Text, nullable=True, doc="JSON HostStatus, as its host agent last sent it."
    )
    decommission_by: Mapped[datetime | None] = mapped_column(
        Timestamp, nullable=True, doc="While decommissioning: when its last devserver must be off."
    )


class RegionRow(Base):
    """Per-region allocation state: the next address to hand out."""

    __tablename__ = "regions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    network: Mapped[str] = mapped_column(String(64))
    next_address: Mapped[int] = mapped_column(Integer, default=0)


class EnvironmentRow(Base):
    __tablename__ = "environments"
    __table_args__ = (
        CheckConstraint("cpus >= 0 AND memory_gib >= 0 AND gpus >= 0", name="hardware"),
        Index("ix_environments_pool", "region", "profile", "state"),
        Index("ix_environments_owner", "owner", "state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    live_name: Mapped[str | None] = mapped_column(
        String(64), unique=True, nullable=True, doc="The name while live; NULL once deleted."
    )
    kind: Mapped[str] = mapped_column(String(16))
    flavor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    profile: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_gib: Mapped[int] = mapped_column(Integer)
    gpus: Mapped[int] = mapped_column(Integer)
    region: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(ForeignKey("hosts.name"), nullable=True, index=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    live_address: Mapped[str | None] = mapped_column(
        String(64), unique=True, nullable=True, doc="The address while live; NULL once freed."
    )
    ssh_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    status_message: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str | None] = mapped_column(
        ForeignKey("users.name", ondelete="RESTRICT"), nullable=True
    )
    lifespan: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True, index=True)
    agent_token_digest: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)
    ready_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    migrating_from: Mapped[str | None] = mapped_column(
        String(64), nullable=True, doc="While migrating: the host it leaves."
    )
    setup: Mapped[str | None] = mapped_column(
        Text, nullable=True, doc="JSON list of SetupItem, as the agent last reported it."
    )
    sync: Mapped[str | None] = mapped_column(
        Text, nullable=True, doc="JSON SyncStatus, as the agent last reported it."
    )
    backup_repository: Mapped[str | None] = mapped_column(
        ForeignKey("backup_repositories.id"),
        nullable=True,
        index=True,
        doc="Devservers: where its home is backed up (it follows the devserver through moves).",
    )
    restore_from: Mapped[int | None] = mapped_column(
        Integer, nullable=True, doc="While provisioning: the backup its home is restored from."
    )
    moved_to: Mapped[str | None] = mapped_column(
        String(32), nullable=True, doc="Once moved: the environment that took its place."
    )
    backup_at: Mapped[datetime | None] = mapped_column(
        Timestamp, nullable=True, doc="When its last successful backup was taken."
    )
    backup_status: Mapped[str | None] = mapped_column(
        Text, nullable=True, doc="JSON BackupStatus (leeward_protocol.backup), kept up to date."
    )
    active_at: Mapped[datetime | None] = mapped_column(
        Timestamp, nullable=True, doc="The last time anything kept it alive (idle stop)."
    )
    kept_by: Mapped[str] = mapped_column(
        Text, default="", doc="What last kept it alive, e.g. `2 SSH sessions`."
    )
    idle_stop_at: Mapped[datetime | None] = mapped_column(
        Timestamp, nullable=True, index=True, doc="When it stops if nothing keeps it alive."
    )
    stopped_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    dormant_delete_at: Mapped[datetime | None] = mapped_column(
        Timestamp, nullable=True, doc="Stopped: when it is deleted for dormancy."
    )


class IdempotencyRow(Base):
    """A create request already seen: the same key from the same user gets the same answer."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user", "key", name="user_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    request_digest: Mapped[str] = mapped_column(String(64))
    environment_id: Mapped[str] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class EventRow(Base):
    """A change to an environment, written by triggers on `environments` (migration 0002) in
    the changing transaction. `position` is the event id clients resume from (NULL on
    PostgreSQL until the sequencer numbers it: leeward.fleet.events)."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_owner_position", "owner", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    position: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True, index=True)
    environment_id: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[datetime] = mapped_column(Timestamp, index=True)
    snapshot: Mapped[str] = mapped_column(Text)


class ProfileBlobRow(Base):
    """A profile file's content, stored once per SHA-256 however many versions hold it."""

    __tablename__ = "profile_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class ProfileVersionRow(Base):
    """One version of a user's profile: its files are `ProfileFileRow`s (the whole set, so any
    version is restored by copying it); `config` is their config.toml as JSON, carried forward."""

    __tablename__ = "profile_versions"
    __table_args__ = (UniqueConstraint("user", "version", name="user_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    source: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text, default="")
    changed: Mapped[str] = mapped_column(Text, default="[]", doc="JSON list of paths.")
    removed: Mapped[str] = mapped_column(Text, default="[]", doc="JSON list of paths.")
    config: Mapped[str | None] = mapped_column(Text, nullable=True, doc="UserConfig as JSON.")
    config_changed: Mapped[bool] = mapped_column(Boolean, default=False)


class ProfileFileRow(Base):
    __tablename__ = "profile_files"
    __table_args__ = (UniqueConstraint("version_id", "path", name="version_path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("profile_versions.id", ondelete="CASCADE"), index=True
    )
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(ForeignKey("profile_blobs.sha256"), index=True)
    size: Mapped[int] = mapped_column(Integer)
    mode: Mapped[int] = mapped_column(Integer)
    modified_at: Mapped[datetime] = mapped_column(Timestamp)
    source: Mapped[str] = mapped_column(String(64))
    changed_in: Mapped[int] = mapped_column(Integer, doc="The version that last changed it.")


class LeaseRow(Base):
    """Which fleet replica holds a piece of work (an environment's start, delete or move; a
    loop), until when. Another replica takes it only once `until` has passed
    (leeward.fleet.leases)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    ticket: Mapped[str] = mapped_column(String(160), doc="This hold's: renewals name it.")
    until: Mapped[datetime] = mapped_column(Timestamp, index=True)


class BackupRepositoryRow(Base):
    """One devserver's restic repository (leeward.fleet.backups): its own key, held here, so
    that no environment can read another's backups. It outlives its devserver (a restore after
    a lost host starts from it) until the fleet's retention for deleted ones has passed."""

    __tablename__ = "backup_repositories"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="RESTRICT"), index=True)
    location: Mapped[str] = mapped_column(Text, doc="restic's --repo.")
    password: Mapped[str] = mapped_column(Text, doc="Its key: restic needs it itself, so kept.")
    interval_seconds: Mapped[int | None] = mapped_column(
        Integer, nullable=True, doc="The owner's schedule for it; NULL: the fleet's default."
    )
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    released_at: Mapped[datetime | None] = mapped_column(
        Timestamp, nullable=True, doc="When the last devserver it served was deleted."
    )
    pruned_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)


class BackupRow(Base):
    """One backup run of a devserver's home, and the snapshot it made."""

    __tablename__ = "backups"
    __table_args__ = (Index("ix_backups_repository_state", "repository_id", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    repository_id: Mapped[str] = mapped_column(ForeignKey("backup_repositories.id"))
    environment_id: Mapped[str] = mapped_column(String(32), index=True)
    environment_name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), doc="running, succeeded or failed.")
    trigger: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    snapshot: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    files_new: Mapped[int] = mapped_column(BigInteger, default=0)
    files_changed: Mapped[int] = mapped_column(BigInteger, default=0)
    files_unmodified: Mapped[int] = mapped_column(BigInteger, default=0)
    total_files: Mapped[int] = mapped_column(BigInteger, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    data_added: Mapped[int] = mapped_column(BigInteger, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    warnings: Mapped[str] = mapped_column(Text, default="[]", doc="JSON list of sentences.")
    forgotten_at: Mapped[datetime | None] = mapped_column(
        Timestamp, nullable=True, doc="When retention removed its snapshot."
    )


class MoveRow(Base):
    """A cold move of a devserver (leeward.fleet.moves): a final backup, a new devserver of the
    asked shape restored from it, the name handed over, the old one deleted. Each stage is
    recorded, so that a fleet restart resumes it where it was."""

    __tablename__ = "moves"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    environment_id: Mapped[str] = mapped_column(String(32), index=True)
    owner: Mapped[str] = mapped_column(String(64))
    flavor: Mapped[str] = mapped_column(String(64))
    region: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(32), doc="user, or decommission:HOST.")
    stage: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), index=True, doc="running, done or failed.")
    message: Mapped[str] = mapped_column(Text, default="")
    backup_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    started_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)


class AnnouncementRow(Base):
    """A banner an operator (or an operation) posts (leeward.fleet.announcements)."""

    __tablename__ = "announcements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    text: Mapped[str] = mapped_column(Text, doc="Markdown.")
    severity: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(Text, doc="JSON Scope: lists of names; empty: everyone.")
    starts_at: Mapped[datetime] = mapped_column(Timestamp, index=True)
    ends_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    actions: Mapped[str] = mapped_column(Text, default="[]", doc="JSON list of Action.")
    revision: Mapped[int] = mapped_column(Integer, default=1)
    source: Mapped[str] = mapped_column(String(128), default="operator")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)
    withdrawn_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)


class DismissalRow(Base):
    """A user dismissed an announcement at a revision (a new revision shows it again)."""

    __tablename__ = "announcement_dismissals"

    user: Mapped[str] = mapped_column(
        ForeignKey("users.name", ondelete="CASCADE"), primary_key=True
    )
    announcement_id: Mapped[int] = mapped_column(
        ForeignKey("announcements.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(Integer)
    dismissed_at: Mapped[datetime] = mapped_column(Timestamp)


class NotificationRow(Base):
    """Something that concerns a person (leeward.fleet.notify), written in the transaction of
    what caused it. `key` makes it once-only (e.g. one expiry warning per lead time)."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_id", "user", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text, doc="Markdown, rendered from the kind's template.")
    environment: Mapped[str | None] = mapped_column(String(64), nullable=True)
    environment_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    actions: Mapped[str] = mapped_column(Text, default="[]", doc="JSON list of Action.")
    data: Mapped[str] = mapped_column(Text, default="{}", doc="JSON: the template's values.")
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    seen_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)


class DeliveryRow(Base):
    """One notification to one sink: pending, leased (being sent by `leased_by` until
    `leased_until`), then sent or failed with the reason."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("notification_id", "sink"),
        Index("ix_deliveries_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    sink: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    leased_until: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    leased_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class PreferencesRow(Base):
    """A user's notification preferences: their email, and sinks per kind."""

    __tablename__ = "notification_preferences"

    user: Mapped[str] = mapped_column(
        ForeignKey("users.name", ondelete="CASCADE"), primary_key=True
    )
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    routes: Mapped[str] = mapped_column(Text, default="{}", doc="JSON: kind -> list of sinks.")
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class SinkRow(Base):
    """An operator's pause of a sink (no row: not paused)."""

    __tablename__ = "sinks"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    paused_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(Timestamp)
