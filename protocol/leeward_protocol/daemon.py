"""What the daemon (`leeward daemon --stdio`) and the VS Code extension say over JSON-RPC.

Requests are `leeward/<noun>/<verb>`, notifications from the daemon `leeward/<topic>`; every
payload is one of the models below, camelCase on the wire. `METHODS` and `NOTIFICATIONS` name the
model of each method's params and result; `scripts/gen-protocol` writes them, with the models'
JSON Schema, into `protocol/schema/`, and the extension's TypeScript types are generated from
there. Long work (create, backup now, move) reports LSP `$/progress`: a create's messages start
with a `CreateStage`, a move's with a `MoveStage`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator

from leeward_protocol import backup as fleet_backup
from leeward_protocol.backup import Backup, BackupDetail, BackupList, Move, Restore
from leeward_protocol.base import MAX_WHOLE, Integral, Request, Resource, Whole
from leeward_protocol.fleet import (
    ContainerProfile,
    CreateContainer,
    CreateDevserver,
    Environment,
    EnvironmentKind,
    EnvironmentState,
    Flavor,
    Hardware,
    Lifespan,
    LifespanPolicy,
    _check_name,
)
from leeward_protocol.notify import Announcement, AnnouncementList, NotificationList
from leeward_protocol.userconfig import check_home_path, exactly_one

LogLevel = Literal["debug", "info", "warning", "error"]


class _Asked(Request):
    """What the extension sends: what a person typed or pasted (a URL, a token, a name), so
    the spaces around it are dropped."""

    model_config = ConfigDict(str_strip_whitespace=True)


class DaemonSettings(_Asked):
    """The daemon's settings, sent by the extension as `initializationOptions`. Every field is
    optional: without them the daemon finds the fleet and token where `leeward login` put them."""

    fleet_url: str | None = Field(
        default=None, description="The fleet's URL; default: the one in the credentials file."
    )
    credentials_file: str | None = Field(
        default=None,
        description="The TOML file with the fleet URL and token that `leeward login` writes.",
    )
    default_region: str | None = Field(
        default=None, description="Region the create wizard offers first; default: the nearest."
    )
    log_level: LogLevel = "info"
    log_file: str | None = Field(
        default=None, description="Where the daemon also writes its log; default: the state dir."
    )
    probe_interval_seconds: float = Field(
        default=5.0,
        ge=0.2,
        le=300,
        description="How often each watched environment is probed over SSH.",
    )
    fleet_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="Timeout of one call to the fleet."
    )


# ---------------------------------------------------------------------------------- catalog


class RegionChoice(Resource):
    """A region as the create wizard shows it: the fleet's view plus this machine's RTT."""

    name: str
    display_name: str
    accepting: bool
    hosts: int
    free: Hardware
    largest_free: Hardware
    rtt_ms: float | None = Field(
        default=None, description="Round trip from this machine to the region; None: no answer."
    )


class LifespanChoice(Resource):
    """One lifespan the wizard offers for a kind (`hours` is None for a permanent devserver)."""

    label: str
    kind: EnvironmentKind
    lifespan: Lifespan
    hours: int | None = None


class DaemonCatalog(Resource):
    zone: str
    regions: list[RegionChoice] = Field(description="Nearest first.")
    flavors: list[Flavor]
    profiles: list[ContainerProfile]
    lifespans: LifespanPolicy
    lifespan_choices: list[LifespanChoice]
    default_region: str | None = Field(
        default=None, description="The settings' default region, else the nearest accepting one."
    )


# ---------------------------------------------------------------------------------- environments


class EnvironmentsResult(Resource):
    """The user's environments; `stale` when the fleet could not be reached and this is the last
    list the daemon had (`fetchedAt` says when)."""

    environments: list[Environment]
    stale: bool = False
    fetched_at: datetime | None = None
    reason: str = Field(default="", description="Why the list is stale, when it is.")


class EnvironmentRef(_Asked):
    environment: str = Field(min_length=1, description="An environment's id or name.")


class CreateParams(_Asked):
    request: Annotated[CreateDevserver | CreateContainer, Field(discriminator="kind")]
    work_done_token: str | int | None = Field(
        default=None,
        description="LSP progress token; when absent the daemon asks the client for one.",
    )


class ExtendParams(_Asked):
    environment: str = Field(min_length=1)
    hours: int = Field(gt=0, le=24 * 365, description="Hours to add to the expiry.")


class CreateStage(StrEnum):
    """The stages of a create, in order; each `$/progress` message starts with one."""

    PLACING = "placing"
    STARTING = "starting"
    CERTIFYING = "certifying"
    READY = "ready"


class ConnectResult(Resource):
    environment: Environment
    host_alias: str = Field(description="The `Host` in the generated ssh config: `ssh ALIAS`.")
    remote_authority: str = Field(description="`ssh-remote+ALIAS`, for VS Code Remote-SSH.")
    remote_uri: str = Field(
        description="`vscode-remote://ssh-remote+ALIAS/HOME`: the folder a Remote-SSH window opens."
    )
    ssh_config: str = Field(description="The ssh config file that defines the alias.")
    remote_home: str
    certificate_valid_before: datetime
    rtt_ms: float = Field(description="How long the SSH probe took, end to end.")


# ---------------------------------------------------------------------------------- health


class HealthState(StrEnum):
    """connecting: not yet reached (or still being made); healthy: the last probe answered in
    time; degraded: answers, but slowly, or the fleet behind it cannot be reached; reconnecting:
    probes fail and the daemon keeps trying; unreachable: failed for longer than the grace;
    stopped: stopped for being idle, its home kept (the next connection starts it)."""

    CONNECTING = "connecting"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    RECONNECTING = "reconnecting"
    UNREACHABLE = "unreachable"
    STOPPED = "stopped"


class HealthRecord(Resource):
    environment_id: str
    name: str
    state: HealthState
    environment_state: EnvironmentState = Field(description="What the fleet last said.")
    rtt_ms: float | None = None
    region: str
    host: str | None = None
    reason: str = Field(default="", description="Why it is not healthy, in one sentence.")
    fleet_reachable: bool = True
    sessions: int = Field(
        default=0, description="SSH sessions to it through `leeward proxy` on this machine."
    )
    route: str | None = Field(
        default=None, description="Where those sessions found it: `api`, `dns` or `cache`."
    )
    dns_bypass: bool = Field(
        default=False, description="The fleet's DNS does not answer; the sessions went around it."
    )
    since: datetime = Field(description="When `state` last changed.")
    checked_at: datetime | None = Field(default=None, description="The last probe.")


class HealthQuery(_Asked):
    environment: str | None = Field(default=None, description="Id or name; all when absent.")


class HealthList(Resource):
    records: list[HealthRecord]


# ---------------------------------------------------------------------------------- daemon state


class FleetLinkState(StrEnum):
    """The daemon's link to the fleet: `connecting` from the start (with credentials) until the
    fleet's event stream first answers, then `connected`, or `unreachable` while it cannot be
    reached; `signedOut` without credentials or with a token the fleet refused."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    UNREACHABLE = "unreachable"
    SIGNED_OUT = "signedOut"


class DaemonStatus(Resource):
    version: str
    fleet_url: str | None = None
    user: str | None = None
    fleet: FleetLinkState
    reason: str = ""
    last_event_id: int | None = Field(default=None, description="The last fleet event seen.")
    events_received: int = Field(default=0, description="Fleet events applied since start.")
    resyncs: int = Field(
        default=0, description="Times the list was fetched whole because the stream said reset."
    )
    log_file: str | None = None


class SignInParams(_Asked):
    fleet_url: str = Field(min_length=1)
    token: str = Field(min_length=1)


class Empty(_Asked):
    """No params."""


# ---------------------------------------------------------------------------------- backups


class BackupShowParams(_Asked):
    environment: str = Field(min_length=1, description="A devserver's id or name.")
    backup: Annotated[int, Field(ge=1, le=MAX_WHOLE), Integral] = Field(
        description="A backup's id, from `leeward/backups/list`."
    )
    path: str = Field(
        default="",
        max_length=4096,
        description="The directory in the snapshot to list, relative to the home; default: "
        "the home itself.",
    )

    @field_validator("path")
    @classmethod
    def _in_home(cls, value: str) -> str:
        return check_home_path(value) if value else value


class BackupNowParams(_Asked):
    environment: str = Field(min_length=1, description="A devserver's id or name.")
    work_done_token: str | int | None = Field(
        default=None,
        description="LSP progress token: the backup's progress is reported on it until it ends.",
    )


# The fleet's request bodies, taken whole with the environment beside them. Their JSON Schema
# says which fields must be present with the mark of `exactly_one` (the TypeScript generator
# passes over it; a top-level `oneOf` or `anyOf` of `required` lists would make `X1 & X2` types).


class RestoreParams(fleet_backup.RestoreRequest):
    """A restore of one of the devserver's backups (`RestoreRequest`), into a new devserver or
    some paths into itself."""

    model_config = exactly_one("to", "paths")

    environment: str = Field(min_length=1, description="The backed-up devserver's id or name.")


class MoveParams(fleet_backup.MoveRequest):
    """A cold move of a devserver to another flavor or region (`MoveRequest`): a flavor, a
    region, or both."""

    model_config = ConfigDict(json_schema_extra=None)

    environment: str = Field(min_length=1, description="A devserver's id or name.")
    work_done_token: str | int | None = Field(
        default=None,
        description="LSP progress token: each stage of the move is reported on it until it ends.",
    )

    # Each name's own refusal, at its field (MoveRequest checks them together, unplaced).
    _names = field_validator("flavor", "region")(_check_name)


# ---------------------------------------------------------------------------------- telling people


class DismissParams(_Asked):
    """Dismiss an announcement at the revision the user saw: a later revision (its text
    changed) is shown again."""

    id: Whole = Field(description="The announcement's id.")
    revision: Whole = Field(description="The revision the user dismissed.")


class SeenParams(_Asked):
    """The editor showed these notifications: the daemon tells the fleet (their editor delivery
    is then sent), so another window or a restart does not show them again."""

    ids: list[Whole] = Field(min_length=1, max_length=1000)


class SeenResult(Resource):
    ids: list[Whole] = Field(description="The notifications marked seen.")
    told: bool = Field(
        description="The fleet was told; when false it could not be reached, and the daemon "
        "tells it when it answers again."
    )


# ---------------------------------------------------------------------------------- the methods


METHODS: dict[str, tuple[type[Request], type[Resource]]] = {
    "leeward/status/get": (Empty, DaemonStatus),
    "leeward/account/signIn": (SignInParams, DaemonStatus),
    "leeward/catalog/get": (Empty, DaemonCatalog),
    "leeward/environments/list": (Empty, EnvironmentsResult),
    "leeward/environments/create": (CreateParams, Environment),
    "leeward/environments/delete": (EnvironmentRef, Environment),
    "leeward/environments/extend": (ExtendParams, Environment),
    "leeward/environments/connect": (EnvironmentRef, ConnectResult),
    "leeward/health/list": (HealthQuery, HealthList),
    "leeward/backups/list": (EnvironmentRef, BackupList),
    "leeward/backups/show": (BackupShowParams, BackupDetail),
    "leeward/backups/now": (BackupNowParams, Backup),
    "leeward/backups/restore": (RestoreParams, Restore),
    "leeward/environments/move": (MoveParams, Move),
    "leeward/announcements/list": (Empty, AnnouncementList),
    "leeward/announcements/dismiss": (DismissParams, Announcement),
    "leeward/notifications/list": (Empty, NotificationList),
    "leeward/notifications/seen": (SeenParams, SeenResult),
}
"""Requests the extension sends: method -> (params model, result model)."""

NOTIFICATIONS: dict[str, type[Resource]] = {
    "leeward/health": HealthRecord,
    "leeward/environments": EnvironmentsResult,
    "leeward/status": DaemonStatus,
    "leeward/announcements": AnnouncementList,
    "leeward/notifications": NotificationList,
}
"""Notifications the daemon sends: method -> params model."""
