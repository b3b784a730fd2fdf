"""Backups, restores and cold moves of devservers: their resources and request bodies.

A devserver's home is backed up with restic into a repository of its own (its own key, held by
the fleet): on a schedule, before every risky operation, and on request. A backup is listed by
its id (`3`) and names its restic snapshot (`snapshot`, as `restic snapshots` shows it).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from leeward_protocol.base import Hours, Integral, Params, Request, Resource, Whole
from leeward_protocol.fleet import NAMED, BackupStatus, Environment, Host, Lifespan, _check_name
from leeward_protocol.userconfig import HomePath


def _present(schema: dict[str, Any], fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """`fields` made non-null in `schema` (null is refused as absent is), and a `required`
    clause for each."""
    for name in fields:
        prop = schema["properties"][name]
        kinds = [k for k in prop.pop("anyOf", []) if k.get("type") != "null"]
        if kinds:
            prop.update(kinds[0])
        prop.pop("default", None)
    return [{"required": [name]} for name in fields]


def refuse_nulls(data: Any, fields: tuple[str, ...]) -> Any:
    """A before-validator's body: `fields` given as null are refused (the schema says they are
    absent or a value, never null)."""
    if isinstance(data, dict):
        for name in fields:
            if name in data and data[name] is None:
                raise ValueError(f"`{name}` is null: give one, or leave it out")
    return data


def one_of(*fields: str) -> Any:
    """JSON Schema for a request that takes exactly one of `fields`."""

    def extra(schema: dict[str, Any]) -> None:
        schema["oneOf"] = _present(schema, fields)

    return extra


def some_of(*fields: str) -> Any:
    """JSON Schema for a request that takes at least one of `fields`."""

    def extra(schema: dict[str, Any]) -> None:
        schema["anyOf"] = _present(schema, fields)

    return extra


class BackupState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class BackupTrigger(StrEnum):
    """Why a backup ran: the schedule, its owner's request, or before a risky operation."""

    SCHEDULE = "schedule"
    REQUEST = "request"
    MOVE = "move"
    DECOMMISSION = "decommission"
    DELETE = "delete"


class Backup(Resource):
    """One backup run of a devserver's home and, once it succeeded, its snapshot."""

    id: Whole = Field(description="What `leeward backup show ENV ID` and restores name.")
    environment: str = Field(description="The devserver's name when it was taken.")
    environment_id: str
    state: BackupState
    trigger: BackupTrigger
    message: str = Field(default="", description="Why it failed, or what it could not read.")
    snapshot: str | None = Field(default=None, description="restic's snapshot id (short form).")
    started_at: datetime
    finished_at: datetime | None = None
    progress: float = Field(default=0.0, ge=0.0, le=1.0, description="While running: 0 to 1.")
    files_new: Whole = 0
    files_changed: Whole = 0
    files_unmodified: Whole = 0
    total_files: Whole = Field(default=0, description="Files in the snapshot.")
    total_bytes: Whole = Field(default=0, description="Their size, before deduplication.")
    data_added: Whole = Field(default=0, description="Bytes this backup added to the store.")
    seconds: float = 0.0
    warnings: list[str] = Field(
        default_factory=list, description="What could not be read; the snapshot exists without."
    )


class BackupList(Resource):
    environment: str
    status: BackupStatus
    backups: list[Backup] = Field(description="Newest first; forgotten snapshots are not listed.")


class BackupEntry(Resource):
    """A file, directory, link or other node in a snapshot."""

    path: str = Field(description="Relative to the home.")
    type: str = Field(description="file, dir, symlink, fifo, socket, dev or chardev.")
    size: Whole = 0
    mode: Whole = 0
    modified_at: datetime
    target: str | None = Field(default=None, description="A link's target (never followed).")


class BackupDetail(Resource):
    backup: Backup
    path: str = Field(description="The directory `entries` lists, relative to the home.")
    entries: list[BackupEntry]


class BackupRef(Params):
    """A backup of an environment, in the URL."""

    ref: str = Field(min_length=1, max_length=64, description="An environment's id or name.")
    backup: Annotated[int, Field(ge=1, le=2**53 - 1), Integral] = Field(
        description="A backup's id from `leeward backup list`."
    )


class BackupFiles(Params):
    path: HomePath | Literal[""] = Field(
        default="", description="A directory in the snapshot, relative to the home."
    )


class BackupSchedule(Request):
    interval_minutes: Annotated[int, Field(ge=5, le=7 * 24 * 60), Integral] | None = Field(
        default=None,
        description="Back it up every this many minutes (5 to a week); null: the fleet's default.",
    )


class RestoreTarget(Request):
    """A new devserver made from a backup: any flavor, in any region."""

    name: str | None = Field(
        default=None, description="Its name; default: a new one.", json_schema_extra=NAMED
    )
    flavor: str | None = Field(
        default=None,
        description="A flavor from the catalog; default: the backed-up devserver's.",
        json_schema_extra=NAMED,
    )
    region: str | None = Field(
        default=None,
        description="Default: the region with the most room.",
        json_schema_extra=NAMED,
    )
    lifespan: Lifespan = Lifespan.PERMANENT
    hours: Hours | None = None

    @model_validator(mode="after")
    def _names(self) -> RestoreTarget:
        for value in (self.name, self.flavor, self.region):
            _check_name(value)
        return self


class RestoreRequest(Request):
    """Restore a backup: into a new devserver (`to`), or some paths into the devserver itself
    (`paths`, written under `~/.leeward-restore/SNAPSHOT/`, nothing overwritten)."""

    model_config = ConfigDict(**Request.model_config, json_schema_extra=one_of("to", "paths"))

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        return refuse_nulls(data, ("to", "paths"))

    backup: Annotated[int, Field(ge=1, le=2**53 - 1), Integral] | None = Field(
        default=None, description="A backup's id; default: the latest successful one."
    )
    to: RestoreTarget | None = None
    paths: list[HomePath] | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one(self) -> RestoreRequest:
        if (self.to is None) == (self.paths is None):
            raise ValueError("give exactly one of `to` (a new devserver) or `paths`")
        return self


class Restore(Resource):
    """What a restore did or is doing."""

    backup: Backup
    environment: str = Field(description="Where it is restored: the new devserver, or itself.")
    environment_id: str
    destination: str | None = Field(
        default=None, description="For paths: where they were written, in the home."
    )
    files: Whole = 0
    bytes: Whole = 0


class MoveState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class MoveStage(StrEnum):
    """backing-up: the final backup; creating: the new devserver placed and restored;
    starting: waiting for it to answer over SSH; handing-over: the name passes to it;
    deleting: the old one goes; done."""

    BACKING_UP = "backing-up"
    CREATING = "creating"
    STARTING = "starting"
    HANDING_OVER = "handing-over"
    DELETING = "deleting"
    DONE = "done"


class MoveRequest(Request):
    model_config = ConfigDict(**Request.model_config, json_schema_extra=some_of("flavor", "region"))

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        return refuse_nulls(data, ("flavor", "region"))

    flavor: str | None = Field(default=None, json_schema_extra=NAMED)
    region: str | None = Field(default=None, json_schema_extra=NAMED)

    @model_validator(mode="after")
    def _some(self) -> MoveRequest:
        _check_name(self.flavor)
        _check_name(self.region)
        if self.flavor is None and self.region is None:
            raise ValueError("give a flavor, a region or both")
        return self


class Move(Resource):
    id: str
    environment: str = Field(description="The moved devserver's name (the new one takes it).")
    environment_id: str = Field(description="The devserver being moved.")
    flavor: str
    region: str
    trigger: str = Field(description="`user`, or `decommission:HOST`.")
    stage: MoveStage
    state: MoveState
    message: str = ""
    backup: Whole | None = Field(default=None, description="The final backup it restores from.")
    target_id: str | None = Field(default=None, description="The new devserver, once created.")
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None


class DecommissionHost(Request):
    by: datetime = Field(
        description="When its last devserver must be off it (ISO 8601 with a zone); at least "
        "an hour ahead, so that owners can be told."
    )
    reason: str = Field(default="", max_length=500)


class HostDetail(Resource):
    """A host, what runs on it, and how its decommission goes (`leeward admin host show`)."""

    host: Host
    decommission_by: datetime | None = None
    environments: list[Environment]
    moves: list[Move] = Field(description="Cold moves off it (a decommission's), newest first.")


class MovePath(Params):
    id: str = Field(min_length=1, max_length=64, description="A move's id.")
