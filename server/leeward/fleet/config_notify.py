"""The fleet's configuration for telling people: notification sinks and delivery, expiry
warnings, and idle stop (`[notify]` and `[idle]` in fleet.toml; docs/operator.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from leeward_protocol.notify import NotificationKind, SinkName


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SmtpConfig(_Strict):
    """The email sink: an SMTP server (aiosmtplib)."""

    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(default="leeward@localhost", description="The From address.")
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout_seconds: float = Field(default=10.0, gt=0)


class NotifyConfig(_Strict):
    enabled: bool = Field(default=True, description="Deliver notifications (they are kept anyway).")
    poll_seconds: float = Field(
        default=1.0, gt=0, description="How often a replica looks for deliveries due."
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long one attempt may take before another replica may try it again.",
    )
    max_attempts: int = Field(default=6, ge=1, le=100)
    backoff_seconds: float = Field(default=5.0, gt=0, description="The first retry's wait.")
    max_backoff_seconds: float = Field(default=600.0, gt=0)
    email: SmtpConfig | None = Field(default=None, description="None: no email sink.")
    chat: list[str] = Field(
        default_factory=list,
        description="apprise URLs the chat sink posts to (e.g. `json://host/path`, "
        "`slack://...`); empty: no chat sink.",
    )
    tracker_url: str | None = Field(
        default=None,
        description="The task tracker's webhook: POST {title, body, environment, user, kind}; "
        "None: no tracker sink.",
    )
    routes: dict[NotificationKind, list[SinkName]] = Field(
        default_factory=lambda: {
            kind: [SinkName.EDITOR, SinkName.EMAIL, SinkName.CHAT] for kind in NotificationKind
        },
        description="Sinks per kind for users who chose none.",
    )
    expiry_warning_hours: list[float] = Field(
        default_factory=lambda: [24.0, 1.0],
        description="Warnings before a temporary environment expires, once each.",
    )
    check_seconds: float = Field(
        default=30.0, gt=0, description="How often expiry warnings and idle stops are looked for."
    )


class IdlePolicy(_Strict):
    stop_after_minutes: float | None = Field(
        default=None, gt=0, description="Stopped (home kept) after this long idle; None: never."
    )
    delete_after_days: float | None = Field(
        default=None, gt=0, description="Deleted after this long stopped, with notice; None: never."
    )
    notice_hours: float = Field(
        default=24.0, ge=0, description="How long before a dormancy delete its owner is told."
    )


class IdleConfig(_Strict):
    """Idle stop. Activity: an open SSH session or editor connection through the agent, or
    input in one recently. Permanent devservers are never stopped for being idle."""

    containers: IdlePolicy = Field(
        default_factory=lambda: IdlePolicy(stop_after_minutes=60, delete_after_days=3)
    )
    temporary_devservers: IdlePolicy = Field(
        default_factory=lambda: IdlePolicy(stop_after_minutes=240, delete_after_days=14)
    )
    input_minutes: float = Field(
        default=30.0,
        gt=0,
        description="Input within this long counts as activity even when "
        "no session is open any more.",
    )
