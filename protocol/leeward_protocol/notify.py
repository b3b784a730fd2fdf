"""Telling people: announcements (banners an operator posts), notifications (one durable
pipeline for everything that concerns a person, delivered to the editor, email, chat and a task
tracker), each user's preferences, and why an environment is still up (idle stop).

An announcement is scoped (everyone, or regions, hosts, flavors, profiles, named users: every
list given must match), shown from `startsAt` to `endsAt`, and carries a `revision` that goes up
when its content changes: a user's dismissal holds for one revision.

A notification is a row created in the same transaction as what causes it; each sink it goes to
has a delivery of its own (leased, retried with backoff, ended `sent` or `failed` with the
reason).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from leeward_protocol.base import Integral, Params, Request, Resource, Whole
from leeward_protocol.fleet import NAMED, Name, _check_name

MAX_ANNOUNCEMENT_CHARS = 20_000
"""The longest announcement text (Markdown): a banner, not a document."""

MAX_SCOPE_ITEMS = 100
"""The most names in one of a scope's lists."""


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class ActionKind(StrEnum):
    """A Leeward action a user can take from an announcement or a notification."""

    LINK = "link"
    EXTEND = "extend"
    MOVE = "move"
    BACKUP_NOW = "backup-now"
    START = "start"


class Action(Resource):
    """One button: a link (`url`), or a Leeward action on `environment`."""

    kind: ActionKind
    label: str = Field(max_length=80)
    url: str | None = Field(default=None, description="kind `link`: an http(s) URL.")
    environment: str | None = Field(default=None, description="The environment it acts on.")
    command: str | None = Field(
        default=None, description="The same in a terminal, e.g. `leeward extend box --hours 24`."
    )


class ActionRequest(Request):
    kind: ActionKind
    label: str = Field(min_length=1, max_length=80)
    url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://\S+$")
    environment: str | None = Field(default=None, json_schema_extra=NAMED)

    _environment_ok = field_validator("environment")(_check_name)

    @model_validator(mode="after")
    def _link_has_url(self) -> ActionRequest:
        if (self.kind == ActionKind.LINK) != (self.url is not None):
            raise ValueError("a `link` action takes a `url`, and only a link does")
        return self


class Scope(Resource):
    """Who an announcement is for. Every list given must match; all empty: everyone."""

    regions: list[str] = Field(default_factory=list)
    hosts: list[str] = Field(default_factory=list)
    flavors: list[str] = Field(default_factory=list)
    profiles: list[str] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list)


class Announcement(Resource):
    id: Whole
    text: str = Field(description="Markdown. Clients render it inert: no HTML, no scripts.")
    severity: Severity
    scope: Scope
    starts_at: datetime
    ends_at: datetime | None = None
    actions: list[Action] = Field(default_factory=list)
    revision: Whole = Field(description="Goes up when its text, severity or actions change.")
    source: str = Field(
        default="operator", description="`operator`, or the operation that posted it."
    )
    created_by: str
    created_at: datetime
    updated_at: datetime
    withdrawn_at: datetime | None = None
    active: bool = Field(description="Between its start and its end, and not withdrawn.")
    dismissed: bool = Field(
        default=False, description="For the asking user: dismissed at this revision."
    )
    environments: list[str] = Field(
        default_factory=list, description="For the asking user: their environments it concerns."
    )


class AnnouncementList(Resource):
    announcements: list[Announcement]


class PostAnnouncement(Request):
    """`POST /v1/admin/announcements`."""

    text: str = Field(min_length=1, max_length=MAX_ANNOUNCEMENT_CHARS)
    severity: Severity = Severity.INFO
    regions: list[Name] = Field(default_factory=list, max_length=MAX_SCOPE_ITEMS)
    hosts: list[Name] = Field(default_factory=list, max_length=MAX_SCOPE_ITEMS)
    flavors: list[Name] = Field(default_factory=list, max_length=MAX_SCOPE_ITEMS)
    profiles: list[Name] = Field(default_factory=list, max_length=MAX_SCOPE_ITEMS)
    users: list[Name] = Field(default_factory=list, max_length=MAX_SCOPE_ITEMS)
    starts_at: datetime | None = Field(default=None, description="Absent: now.")
    ends_at: datetime | None = Field(default=None, description="Absent: until withdrawn.")
    actions: list[ActionRequest] = Field(default_factory=list, max_length=5)

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> PostAnnouncement:
        for when in (self.starts_at, self.ends_at):
            if when is not None and when.tzinfo is None:
                raise ValueError("times need a UTC offset, e.g. 2026-12-02T10:00:00Z")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError(
                "`endsAt` is not after `startsAt`: an announcement must end after it starts"
            )
        return self


class EditAnnouncement(Request):
    """`PATCH /v1/admin/announcements/{id}`: what is given changes; a change of text, severity
    or actions makes a new revision (shown again to those who dismissed it)."""

    text: str | None = Field(default=None, min_length=1, max_length=MAX_ANNOUNCEMENT_CHARS)
    severity: Severity | None = None
    ends_at: datetime | None = None
    actions: list[ActionRequest] | None = Field(default=None, max_length=5)


class Dismiss(Request):
    """`POST /v1/announcements/{id}/dismiss`: dismissed at this revision."""

    revision: Whole


class NotificationKind(StrEnum):
    EXPIRY = "expiry"
    BACKUP_FAILED = "backup-failed"
    DECOMMISSION = "decommission"
    STORM = "storm"
    SHARE = "share"
    SETUP_FAILED = "setup-failed"
    IDLE_STOP = "idle-stop"
    DORMANT_DELETE = "dormant-delete"


class SinkName(StrEnum):
    EDITOR = "editor"
    EMAIL = "email"
    CHAT = "chat"
    TRACKER = "tracker"


class DeliveryState(StrEnum):
    PENDING = "pending"
    LEASED = "leased"
    SENT = "sent"
    FAILED = "failed"


class Delivery(Resource):
    sink: SinkName
    state: DeliveryState
    attempts: Whole
    next_attempt_at: datetime | None = None
    sent_at: datetime | None = None
    reason: str = Field(default="", description="Why the last attempt failed, or why it ended.")


class Notification(Resource):
    id: Whole
    user: str
    kind: NotificationKind
    title: str
    body: str = Field(description="Markdown, from the kind's template.")
    environment: str | None = None
    actions: list[Action] = Field(default_factory=list)
    created_at: datetime
    seen_at: datetime | None = Field(default=None, description="When the editor showed it.")
    deliveries: list[Delivery] = Field(default_factory=list)


class NotificationList(Resource):
    notifications: list[Notification]


class SeenNotifications(Request):
    """`POST /v1/notifications/seen`: the editor showed these."""

    ids: list[Whole] = Field(min_length=1, max_length=1000)


class Inbox(Resource):
    """`GET /v1/inbox?after=N&digest=D&waitSeconds=S`: what the editor shows a user, in one
    answer. It waits up to `waitSeconds` (a long poll) while nothing is newer than `after` and
    the digest is still `digest`, and answers early at a scheduled announcement's start or end."""

    announcements: list[Announcement] = Field(
        description="Active and concerning the user, dismissed ones included (flagged)."
    )
    notifications: list[Notification] = Field(
        description="Not yet seen, newer than `after`, oldest first (at most 100)."
    )
    digest: str = Field(description="Changes when any of the above does: give it back to wait.")


MAX_WAIT_SECONDS = 60


class InboxQuery(Params):
    """`GET /v1/inbox`."""

    after: Whole = Field(default=0, description="The newest notification id already shown.")
    digest: str = Field(
        default="", max_length=128, description="The last answer's digest: wait while it holds."
    )
    wait_seconds: float = Field(
        default=0.0,
        ge=0,
        le=MAX_WAIT_SECONDS,
        alias="waitSeconds",
        description="How long to wait for news.",
    )


class NotificationsQuery(Params):
    """`GET /v1/notifications`."""

    unseen: bool = Field(default=False, description="Only those the editor has not shown.")
    limit: Annotated[int, Field(ge=1, le=1000), Integral] = Field(
        default=100, description="The newest this many."
    )


class UserPath(Params):
    """A user, in the URL."""

    user: str = Field(description="A user's name.", json_schema_extra=NAMED)


class SinkPath(Params):
    """A sink, in the URL."""

    name: SinkName


class Preferences(Resource):
    """A user's choice of sinks per kind (absent kinds: the fleet's defaults)."""

    user: str
    email: str | None = None
    routes: dict[NotificationKind, list[SinkName]] = Field(
        description="Every kind: the sinks it goes to (the user's choice, else the fleet's)."
    )
    chosen: list[NotificationKind] = Field(
        default_factory=list,
        description="The kinds routed by the user's own choice; the others follow the fleet's "
        "default (and its changes).",
    )


EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+$"


class SetPreferences(Request):
    """`PUT /v1/me/notifications`: only your own."""

    email: str | None = Field(default=None, max_length=254, pattern=EMAIL_PATTERN)
    routes: dict[NotificationKind, list[SinkName]] = Field(default_factory=dict)

    @field_validator("email", mode="before")
    @classmethod
    def _an_address(cls, value: object) -> object:
        """Said plainly, before the pattern's own message (which quotes a regex)."""
        if isinstance(value, str) and not re.fullmatch(EMAIL_PATTERN, value):
            raise ValueError(
                f"{value[:60]!r} is not an email address; give one such as name@example.com"
            )
        return value


class SinkStatus(Resource):
    name: SinkName
    configured: bool
    paused: bool
    paused_by: str | None = None
    reason: str = ""
    pending: Whole = 0
    failed: Whole = 0


class SinkList(Resource):
    sinks: list[SinkStatus]


class PauseSink(Request):
    """`POST /v1/admin/sinks/{name}`: pause (deliveries wait) or resume."""

    paused: bool
    reason: str = Field(default="", max_length=500)


__all__ = [
    "Action",
    "ActionKind",
    "ActionRequest",
    "Announcement",
    "AnnouncementList",
    "Delivery",
    "DeliveryState",
    "Dismiss",
    "EditAnnouncement",
    "Inbox",
    "InboxQuery",
    "Notification",
    "NotificationKind",
    "NotificationList",
    "NotificationsQuery",
    "PauseSink",
    "PostAnnouncement",
    "Preferences",
    "Scope",
    "SeenNotifications",
    "SetPreferences",
    "Severity",
    "SinkList",
    "SinkName",
    "SinkPath",
    "SinkStatus",
    "UserPath",
]
