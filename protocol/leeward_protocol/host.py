"""The host API: what the fleet and a host agent (`leeward host serve`) say to each other.

The fleet commands a host (signed with the fleet's command key: leeward.common.hostauth):

- `PUT /v1/environments/{id}` (`HostEnvironment`): start it, or bring it to this spec.
  Idempotent: the same spec again is a no-op, so a start retried after a lost answer, or asked
  by two fleet replicas, starts it once.
- `POST /v1/environments/{id}/assign` (`HostEnvironment`): a running one's new identity/owner.
- `POST /v1/environments/{id}/migrate` (`MigrateIn`), to the host it moves to: take it live
  from `source` (same region, same address).
- `DELETE /v1/environments/{id}`: stop it and wipe its disk. Idempotent.
- `POST /v1/environments/{id}/suspend`: stop its agent and sandbox and keep its disk (its home)
  here, for a later `PUT` of the same spec (idle stop). Idempotent.
- `POST /v1/environments/{id}/backup` (`BackupOrder` -> NDJSON: `BackupProgress` lines, then
  one `BackupOutcome`): back its home up with restic into the repository the order names.
- `POST /v1/environments/{id}/restore` (`RestoreOrder` -> `RestoreResult`), before its first
  start: its home restored from a snapshot. Idempotent: a home already there is kept.
- `POST /v1/environments/{id}/restore-paths` (`RestorePathsOrder` -> `RestoreResult`): some paths
  of a snapshot written into its running home, by its owner, inside it.
- `POST /v1/running` (`RunningQuery` -> `RunningAnswer`): which of these are up.
- `GET /v1/host` (`HostStatus`): what the host is and has.

A host speaks to the fleet with its host token (bearer, kept hashed by the fleet):

- `POST /v1/hosts/{name}/heartbeat` (`HostStatus` -> `HostAck`): it is alive, where the fleet
  reaches it, its capacity and health. The first one registers it.
- `GET /v1/hosts/{name}/environments` (`HostRecords`): the fleet's records of the
  environments placed on this host, and on no other.

Nothing local crosses it (no process ids or paths): a host on a VM or a Kubernetes node speaks
the same API.
"""

from __future__ import annotations

from pydantic import Field

from leeward_protocol.base import Request, Resource
from leeward_protocol.fleet import EnvironmentKind, Hardware, Name
from leeward_protocol.userconfig import HomePath


class HostIdentity(Request):
    """Who an environment is and whom it serves (see `EnvironmentSpec` on the host)."""

    owner: str | None = Field(max_length=64)
    host_key: str = Field(max_length=16384, description="OpenSSH private key, PEM text.")
    host_certificate: str = Field(max_length=16384)
    agent_token: str = Field(max_length=256)


class HostEnvironment(Request):
    """An environment as its host starts it."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    name: str = Field(max_length=64)
    fqdn: str = Field(max_length=255)
    kind: EnvironmentKind
    region: Name
    host: Name
    address: str = Field(max_length=64)
    ssh_port: int = Field(ge=1, le=65534)
    hardware: Hardware
    user_ca: str = Field(max_length=4096)
    fleet_url: str = Field(max_length=2048)
    heartbeat_seconds: float = Field(gt=0, le=3600)
    identity: HostIdentity
    image: str = Field(default="base", max_length=64)


class MigrateIn(Request):
    source: Name = Field(description="The host it leaves.")
    blackout_seconds: float = Field(ge=0, le=60)


class RunningQuery(Request):
    ids: list[str] = Field(max_length=100_000)


class RunningAnswer(Resource):
    running: list[str]


class HostStatus(Request):
    """What a host says of itself, in every heartbeat."""

    url: str = Field(max_length=2048, description="Where the fleet reaches its API.")
    version: str = Field(default="", max_length=64)
    capacity: Hardware | None = Field(
        default=None, description="What it has (the fleet's config says what it may use)."
    )
    environments: list[str] = Field(
        default_factory=list, max_length=100_000, description="Environments running on it now."
    )
    isolation: str = Field(default="", max_length=1024)
    isolates_owners: bool = False
    network: str = Field(
        default="loopback",
        max_length=32,
        description='"namespaces" (its own network namespace, routes) or "loopback".',
    )


class HostAck(Resource):
    interval_seconds: float = Field(description="How often to send the next heartbeat.")


class HostRecord(Resource):
    id: str
    name: str
    state: str
    address: str | None


class HostRecords(Resource):
    environments: list[HostRecord]


class BackupRepository(Request):
    """A devserver's restic repository, as the fleet hands it to the host that backs it up or
    restores from it (for that one run: the host keeps no key)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    location: str = Field(min_length=1, max_length=4096, description="restic's --repo.")
    password: str = Field(min_length=16, max_length=1024)


class BackupOrder(Request):
    repository: BackupRepository
    host: str = Field(max_length=128, description="restic's --host for the snapshot.")
    tags: list[str] = Field(default_factory=list, max_length=16)
    excludes: list[str] = Field(default_factory=list, max_length=1000)
    parent: str | None = Field(default=None, max_length=64)


class BackupProgress(Resource):
    percent: float
    files_done: int
    bytes_done: int
    total_files: int
    total_bytes: int


class BackupResult(Resource):
    snapshot: str
    files_new: int
    files_changed: int
    files_unmodified: int
    total_files: int
    total_bytes: int
    data_added: int
    seconds: float
    warnings: list[str] = Field(default_factory=list)


class BackupOutcome(Resource):
    """The last line of a backup's answer: its result, or why it failed."""

    result: BackupResult | None = None
    error: str | None = None


class RestoreOrder(Request):
    repository: BackupRepository
    snapshot: str = Field(pattern=r"^[0-9a-f]{8,64}$")
    owner: str | None = Field(default=None, max_length=64, description="Whose the files are.")


class RestorePathsOrder(Request):
    repository: BackupRepository
    snapshot: str = Field(pattern=r"^[0-9a-f]{8,64}$")
    owner: str | None = Field(default=None, max_length=64)
    paths: list[HomePath] = Field(min_length=1, max_length=64)
    folder: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Written under `~/.leeward-restore/FOLDER/` (relative to the home).",
    )


class RestoreResult(Resource):
    files: int
    bytes: int
    seconds: float
    destination: str = Field(default="", description="Where the paths went, in the home.")
