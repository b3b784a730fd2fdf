"""The fleet's resources and its HTTP API bodies (`/v1/...`).

Every field the fleet sends or accepts is defined here, once. The JSON Schema in
`protocol/schema/` is generated from these models by `scripts/gen-protocol`.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.config import JsonDict

from leeward_protocol.base import MAX_WHOLE, Hours, Integral, Params, Request, Resource, Whole

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$"
"""Names of environments, regions, hosts, flavors, profiles and users: DNS labels, 2 to 32 chars."""

_NAME_RE = re.compile(NAME_PATTERN)

USER_PATTERN = r"^[a-z_][a-z0-9._-]{0,63}$"
"""User names: POSIX-style login names (they become SSH principals and the SSH user)."""

_USER_RE = re.compile(USER_PATTERN)


def check_user_name(value: str) -> str:
    if not _USER_RE.match(value):
        raise ValueError(
            "a user name is 1 to 64 characters of lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or '_'"
        )
    return value


Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=2, max_length=32)]

NAMED: JsonDict = {"pattern": NAME_PATTERN, "minLength": 2, "maxLength": 32}
"""A name's constraints in the JSON Schema of a request field that checks them itself (so that
its refusal is a sentence of its own, or names the catalog's choices)."""


class EnvironmentKind(StrEnum):
    DEVSERVER = "devserver"
    CONTAINER = "container"


class EnvironmentState(StrEnum):
    """Where an environment is in its life.

    warm: a pooled container waiting for a tenant (never shown to users);
    provisioning: placed on a host, its agent starting and being certified;
    running: reachable over SSH; migrating: moving live to another host of its region (its
    network goes dark for a blackout; sessions through `leeward proxy` ride through it);
    stopped: stopped for being idle, its home kept on its host (its next connection or
    `leeward start` starts it again);
    deleting: being torn down; deleted: gone, capacity freed;
    failed: provisioning failed, capacity freed, the reason is in `statusMessage`.
    """

    WARM = "warm"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    MIGRATING = "migrating"
    STOPPED = "stopped"
    DELETING = "deleting"
    DELETED = "deleted"
    FAILED = "failed"


LIVE_STATES = frozenset(
    {
        EnvironmentState.WARM,
        EnvironmentState.PROVISIONING,
        EnvironmentState.RUNNING,
        EnvironmentState.MIGRATING,
        EnvironmentState.STOPPED,
        EnvironmentState.DELETING,
    }
)
"""States in which an environment holds capacity and an address (a stopped one too: its host
keeps its home, and it starts again there)."""

REACHABLE_STATES = frozenset({EnvironmentState.RUNNING, EnvironmentState.MIGRATING})
"""States in which an environment takes SSH connections (a migrating one is dark only for its
blackout)."""

CONNECTABLE_STATES = REACHABLE_STATES | {EnvironmentState.STOPPED}
"""States in which a connection through `leeward proxy` can be made: a stopped environment
(idle stop) is started again by its next connection."""


class Lifespan(StrEnum):
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


class HostState(StrEnum):
    """active: takes new environments; draining: its environments move live, then
    maintenance; decommissioning: being emptied before a deadline (`leeward admin host
    decommission`), then retired, for good; decommissioned: it left the fleet's config."""

    ACTIVE = "active"
    DRAINING = "draining"
    MAINTENANCE = "maintenance"
    DECOMMISSIONING = "decommissioning"
    RETIRED = "retired"
    DECOMMISSIONED = "decommissioned"


class FlavorKind(StrEnum):
    VM = "vm"
    PHYSICAL = "physical"
    GPU = "gpu"


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


class Hardware(Resource):
    """An amount of compute: what a flavor or profile needs, what a host has or has free."""

    cpus: int = Field(ge=0, le=MAX_WHOLE, description="Virtual CPUs.")
    memory_gib: int = Field(ge=0, le=MAX_WHOLE, description="Memory in GiB.")
    gpus: int = Field(default=0, ge=0, le=MAX_WHOLE, description="GPU slots.")

    def fits_in(self, other: Hardware) -> bool:
        return (
            self.cpus <= other.cpus
            and self.memory_gib <= other.memory_gib
            and self.gpus <= other.gpus
        )


class Flavor(Resource):
    """A devserver size."""

    name: Name
    kind: FlavorKind
    description: str = ""
    hardware: Hardware
    image: Name = Field(
        default="base", description="The image its devservers' sandboxes start from."
    )


class ContainerProfile(Resource):
    """An on-demand container's workflow profile: what is pre-installed, and its hardware."""

    name: Name
    description: str = ""
    tools: list[str] = Field(default_factory=list, description="What a fresh container has.")
    hardware: Hardware
    image: Name = Field(default="base", description="The image its containers start from.")
    warm_pool: int = Field(default=0, ge=0, description="Warm containers kept ready per region.")


class Host(Resource):
    """A placement target with capacity, in one region."""

    name: Name
    region: Name
    state: HostState
    capacity: Hardware
    used: Hardware
    environments: int = Field(ge=0, description="Live environments placed on it.")
    reachable: bool | None = Field(
        default=None,
        description="Whether its host agent was heard within the heartbeat window; null where "
        "the fleet starts environments itself.",
    )
    last_seen: datetime | None = Field(default=None, description="Its agent's last heartbeat.")


class HostList(Resource):
    hosts: list[Host]


class RegionPath(Params):
    name: str = Field(description="A region's name.", json_schema_extra=NAMED)


class RegionLinks(Resource):
    """`POST /v1/admin/regions/{name}/cut` and `/restore`: the region's links now."""

    region: str
    cut: bool = Field(description="Whether its links are cut (its environments unreachable).")


class Region(Resource):
    """A region and what it can take now."""

    name: Name
    display_name: str
    accepting: bool = Field(description="Whether new environments can be placed here now.")
    hosts: int = Field(ge=0)
    capacity: Hardware
    free: Hardware = Field(description="Free capacity summed over active hosts.")
    largest_free: Hardware = Field(
        description="Free capacity of the emptiest active host: the biggest thing that fits."
    )
    probe: str | None = Field(
        default=None,
        description="HOST:PORT that accepts TCP in this region: clients time a connect to it "
        "to measure their round trip to the region.",
    )


class LifespanPolicy(Resource):
    devserver_default_hours: int
    devserver_max_hours: int
    container_hours: int
    container_max_hours: int


class Catalog(Resource):
    zone: str
    dns: str | None = Field(
        default=None, description="`HOST:PORT` of the zone's DNS server (UDP and TCP)."
    )
    regions: list[Region]
    flavors: list[Flavor]
    profiles: list[ContainerProfile]
    lifespans: LifespanPolicy


class SetupState(StrEnum):
    PENDING = "pending"
    INSTALLING = "installing"
    INSTALLED = "installed"
    FAILED = "failed"


class SetupKind(StrEnum):
    FEATURE = "feature"
    ONE_OFF = "one-off"
    DOTFILES = "dotfiles"


class SetupItem(Resource):
    """One thing installed in a new environment: a feature, a one-off, the dotfiles. A failed
    item never holds the environment back: it is reported here with the end of its log."""

    kind: SetupKind
    name: str = Field(description="The feature's name, `one-off N`, or `dotfiles`.")
    state: SetupState
    detail: str = Field(default="", description="One sentence: what ran, or why it failed.")
    log: str = Field(default="", description="The end of its log (at most 4 KiB).")
    log_path: str | None = Field(default=None, description="The whole log, in the environment.")
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Refusal(Resource):
    """A file the profile store would not take, and why (a sentence that says what to do)."""

    path: str
    code: Literal[
        "escapes-home",
        "symlink",
        "not-a-file",
        "too-large",
        "too-many-files",
        "profile-too-large",
        "secret",
        "binary",
        "bad-content",
    ]
    reason: str


class SyncConflict(Resource):
    """The profile changed a file that was also edited here since the last sync: this
    environment's version stays at `path`, the other one is kept at `copy`."""

    path: str
    copy_path: str = Field(description="Where the other version was written, in the home.")
    other_environment: str | None = Field(default=None, description="Where the other came from.")
    version: Whole = Field(description="The profile version that conflicted.")
    at: datetime


class SyncStatus(Resource):
    """The environment's agent and the user's profile."""

    version: Whole = Field(default=0, description="The profile version applied here (0: none).")
    synced_at: datetime | None = None
    conflicts: list[SyncConflict] = Field(default_factory=list)
    refused: list[Refusal] = Field(default_factory=list)
    error: str = Field(default="", description="Why the last sync failed; empty when it worked.")


class BackupStatus(Resource):
    """A devserver's backups at a glance (in `Environment.backup`;
    leeward_protocol.backup has the rest)."""

    last_success_at: datetime | None = None
    last_backup: Whole | None = Field(default=None, description="The last successful backup.")
    interval_minutes: Whole = Field(description="How often it is backed up.")
    running: bool = False
    overdue: bool = Field(
        default=False, description="No successful backup in two intervals: look at `message`."
    )
    message: str = Field(default="", description="The last failure, if the last run failed.")


class Activity(Resource):
    """Why an environment is still up, and when it stops for being idle (`Environment.activity`)."""

    active_at: datetime | None = Field(
        default=None, description="The last time anything kept it alive."
    )
    kept_by: str = Field(
        default="", description="What did: e.g. `2 SSH sessions`, `input 3 min ago`."
    )
    stops_at: datetime | None = Field(default=None, description="None: no idle stop applies.")
    stopped_at: datetime | None = None
    deletes_at: datetime | None = Field(
        default=None, description="Stopped: when it is deleted for dormancy (with notice)."
    )


class Environment(Resource):
    """A devserver or an on-demand container."""

    id: str = Field(
        description="Stable identifier, e.g. `e-7k2m9q4x1c`; a host certificate principal."
    )
    name: Name
    fqdn: str = Field(description="`NAME.REGION.ZONE`; the SSH HostKeyAlias and a DNS name.")
    kind: EnvironmentKind
    flavor: str | None = Field(default=None, description="Devservers: the flavor.")
    profile: str | None = Field(default=None, description="Containers: the workflow profile.")
    hardware: Hardware
    region: Name
    host: str | None = None
    address: str | None = Field(default=None, description="Stable address for the whole life.")
    ssh_port: int | None = None
    migrating_from: str | None = Field(
        default=None, description="While migrating: the host it is leaving (`host` is the new one)."
    )
    relay_port: int | None = Field(
        default=None,
        description="The agent's resumable relay (`leeward proxy`): the SSH port + 1.",
    )
    state: EnvironmentState
    status_message: str = ""
    owner: str | None = None
    lifespan: Lifespan
    expires_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    ready_at: datetime | None = None
    last_seen_at: datetime | None = Field(
        default=None, description="Last heartbeat from the environment's agent."
    )
    setup: list[SetupItem] = Field(
        default_factory=list, description="Features, one-offs and dotfiles, with their status."
    )
    sync: SyncStatus | None = Field(default=None, description="Its profile sync; None: not yet.")
    backup: BackupStatus | None = Field(
        default=None, description="Devservers: their backups at a glance; None: not backed up."
    )
    moved_to: str | None = Field(
        default=None, description="Once moved (`leeward move`): the devserver that took its place."
    )
    activity: Activity | None = Field(
        default=None, description="What keeps it up, and when it stops for being idle."
    )


class EnvironmentList(Resource):
    environments: list[Environment]


def _check_name(value: str | None) -> str | None:
    if value is not None and not _NAME_RE.match(value):
        raise ValueError(
            "must be 2 to 32 characters of lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )
    return value


class _CreateBase(Request):
    name: str | None = Field(
        default=None,
        description="A DNS label; generated when absent. Unique among live environments.",
        json_schema_extra=NAMED,
    )
    region: str | None = Field(
        default=None,
        description="A region of the catalog; the region with the most room when absent.",
        json_schema_extra=NAMED,
    )

    _name_ok = field_validator("name")(_check_name)


class CreateDevserver(_CreateBase):
    kind: Literal[EnvironmentKind.DEVSERVER]
    flavor: str = Field(description="A flavor name from the catalog.", json_schema_extra=NAMED)
    lifespan: Lifespan = Lifespan.TEMPORARY
    hours: Hours | None = Field(
        default=None,
        description="Temporary devservers: hours until expiry (the policy's default when absent; "
        "the catalog's `lifetimes` say the most).",
    )

    @model_validator(mode="after")
    def _hours_match_lifespan(self) -> CreateDevserver:
        if self.lifespan is Lifespan.PERMANENT and self.hours is not None:
            raise ValueError("hours: a permanent devserver has no expiry; leave hours out")
        return self


class CreateContainer(_CreateBase):
    kind: Literal[EnvironmentKind.CONTAINER]
    profile: str = Field(
        description="A container profile name from the catalog.", json_schema_extra=NAMED
    )
    hours: Hours | None = Field(
        default=None, description="Hours until expiry (the container lifetime when absent)."
    )


CreateEnvironment = Annotated[CreateDevserver | CreateContainer, Field(discriminator="kind")]


class EventType(StrEnum):
    """environment: an environment changed (it carries the new state, `deleted` included);
    reset: the events after the client's last id are no longer kept: list again, then go on."""

    ENVIRONMENT = "environment"
    RESET = "reset"


class FleetEvent(Resource):
    """One change, as `GET /v1/events` streams it (Server-Sent Events, whose `id:` is `id`).
    Ids grow with commit order; a client that reconnects with `Last-Event-ID` gets every event
    after it, once."""

    id: int
    type: EventType
    at: datetime
    environment: Environment | None = None


class MigrateEnvironment(Request):
    host: str | None = Field(
        default=None,
        description="The host to move to, in the same region; the one with most room if absent.",
    )


class ExtendEnvironment(Request):
    hours: Hours = Field(description="Hours to add to the expiry (within the policy's most).")


class ErrorDetail(Resource):
    code: str = Field(description="Stable, machine-readable: e.g. `invalid`, `no_capacity`.")
    message: str = Field(description="One sentence: what went wrong and what to do.")
    field: str | None = Field(default=None, description="The request field at fault, if any.")
    regions_with_room: list[str] | None = None


class ErrorBody(Resource):
    error: ErrorDetail


class Health(Resource):
    status: Literal["ok", "degraded"]
    version: str
    database: str
    provider: str


class WhoAmI(Resource):
    user: str
    role: Role


class SSHAuthorities(Resource):
    """The fleet's SSH certificate authorities, for known_hosts and for agents."""

    zone: str
    host_ca: str = Field(description="OpenSSH public key that signs environments' host keys.")
    user_ca: str = Field(description="OpenSSH public key that signs users' keys.")


class CertificateRequest(Request):
    public_key: str = Field(description="The user's OpenSSH public key, one line.")
    hours: Annotated[int, Field(ge=1, le=16), Integral] | None = Field(
        default=None, description="Validity; the fleet's limit when absent."
    )


class Certificate(Resource):
    certificate: str = Field(description="OpenSSH certificate, one line (`*-cert.pub`).")
    principals: list[str]
    valid_after: datetime
    valid_before: datetime


class CreateUser(Request):
    name: str = Field(json_schema_extra={"pattern": USER_PATTERN})
    role: Role = Role.USER

    _name_ok = field_validator("name")(check_user_name)


class CreateToken(Request):
    user: str
    hours: Hours | None = Field(default=None, description="Validity; no expiry when absent.")
    description: str = ""


class CreateHostToken(Request):
    hours: Hours | None = Field(default=None, description="Validity; no expiry when absent.")


class HostTokenIssued(Resource):
    """What a host agent's host.toml needs to join the fleet: shown once."""

    host: str
    token: str = Field(description="The secret; the fleet keeps only its hash.")
    expires_at: datetime | None = None
    fleet_key: str = Field(description="The fleet's public command key, which the host pins.")
    fleet_url: str


class Token(Resource):
    token: str = Field(description="The secret, shown once; the fleet keeps only its hash.")
    user: str
    role: Role
    expires_at: datetime | None = None


class User(Resource):
    name: str
    role: Role
    created_at: datetime


class AgentHeartbeat(Request):
    """What an environment's agent reports every few seconds."""

    environment_id: str
    sessions: Whole = Field(default=0, description="Open SSH connections.")
    agent_version: str = ""
    editor_sessions: Whole = Field(
        default=0,
        description="Of `sessions`, those that look like VS Code's (they ran its server, or "
        "forwarded ports).",
    )
    idle_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Seconds since the last input from any session; None: none since the "
        "agent started (agents before idle stop send nothing).",
    )


class HeartbeatAck(Resource):
    interval_seconds: float


class AgentReport(Resource):
    """`POST /v1/agent/report`: the agent's setup items and profile sync, as they change. Each
    field given replaces the stored one; an omitted field is left as it is. (A resource, not a
    request: it carries `SetupItem` and `SyncStatus`, whose one schema is the resource's.)"""

    environment_id: str
    setup: list[SetupItem] | None = None
    sync: SyncStatus | None = None
