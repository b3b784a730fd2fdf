"""Environment rows as the API's `Environment` resources, new ids and names, and the guarded
update of one environment's row: what every room that reads or changes environments shares.

It imports nothing of the fleet but the store, so the event log (which rebuilds resources from
its snapshots) and the rooms can all depend on it."""

from __future__ import annotations

import json
import secrets
import string
from datetime import UTC, datetime
from typing import Any, cast

from pydantic import TypeAdapter
from sqlalchemy import Table, update

from leeward.common.clock import Clock
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import EnvironmentRow
from leeward_protocol.fleet import (
    Activity,
    BackupStatus,
    Environment,
    EnvironmentKind,
    EnvironmentState,
    Hardware,
    Lifespan,
    SetupItem,
    SyncStatus,
)

_ALPHABET = string.ascii_lowercase + string.digits
ENVIRONMENTS = cast(Table, EnvironmentRow.__table__)

SETUP_ITEMS = TypeAdapter(list[SetupItem])
"""An environment's setup items, as its row keeps them (JSON)."""

_DATETIMES = (
    *("expires_at", "created_at", "updated_at", "ready_at", "last_seen_at", "deleted_at"),
    *("backup_at", "active_at", "idle_stop_at", "stopped_at", "dormant_delete_at"),
)


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def new_environment_id() -> str:
    return "e-" + _random(10)


def new_name(prefix: str) -> str:
    """A generated name; the unique constraint on live names catches the rare collision,
    and `create` tries again."""
    return f"{prefix[:24]}-{_random(6)}"


def fqdn(row: EnvironmentRow, zone: str) -> str:
    """The environment's fully qualified name, `NAME.REGION.ZONE`: its DNS name and the first
    principal of its host certificate."""
    return f"{row.name}.{row.region}.{zone}"


def relay_port(ssh_port: int | None) -> int | None:
    """Every agent serves its resumable relay on the port after its SSH port."""
    return None if ssh_port is None else ssh_port + 1


def to_resource(row: EnvironmentRow, zone: str) -> Environment:
    return Environment(
        id=row.id,
        name=row.name,
        fqdn=fqdn(row, zone),
        kind=EnvironmentKind(row.kind),
        flavor=row.flavor,
        profile=row.profile,
        hardware=Hardware(cpus=row.cpus, memory_gib=row.memory_gib, gpus=row.gpus),
        region=row.region,
        host=row.host,
        address=row.address,
        ssh_port=row.ssh_port,
        relay_port=relay_port(row.ssh_port),
        migrating_from=row.migrating_from,
        state=EnvironmentState(row.state),
        status_message=row.status_message,
        owner=row.owner,
        lifespan=Lifespan(row.lifespan),
        expires_at=row.expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        ready_at=row.ready_at,
        last_seen_at=row.last_seen_at,
        setup=SETUP_ITEMS.validate_json(row.setup) if row.setup else [],
        sync=SyncStatus.model_validate_json(row.sync) if row.sync else None,
        backup=BackupStatus.model_validate_json(row.backup_status) if row.backup_status else None,
        moved_to=row.moved_to,
        activity=activity_of(row),
    )


def activity_of(row: EnvironmentRow) -> Activity | None:
    """What keeps it up and when it stops for being idle (idle stop: leeward.fleet.activity);
    None for what nothing of that applies to (warm, or never active and never stopped)."""
    if row.active_at is None and row.stopped_at is None and row.idle_stop_at is None:
        return None
    return Activity(
        active_at=row.active_at,
        kept_by=row.kept_by or "",
        stops_at=row.idle_stop_at if row.state == EnvironmentState.RUNNING else None,
        stopped_at=row.stopped_at,
        deletes_at=row.dormant_delete_at,
    )


def environment_from_snapshot(snapshot: str, zone: str) -> Environment:
    """The resource from an event's snapshot of the row (JSON, as the store's trigger wrote it)."""
    fields: dict[str, Any] = json.loads(snapshot)
    for name in _DATETIMES:
        value = fields.get(name)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            fields[name] = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
    return to_resource(EnvironmentRow(**fields), zone)


async def update_environment(
    store: Store, clock: Clock, env_id: str, *, expect: set[str] | None = None, **values: Any
) -> bool:
    """Update one environment if it is still in one of `expect`; False if it moved on."""
    values.setdefault("updated_at", clock.now())
    # On the table, not the mapped class: the ORM's bulk-update bookkeeping is not needed.
    query = update(ENVIRONMENTS).where(ENVIRONMENTS.c.id == env_id).values(**values)
    if expect is not None:
        query = query.where(ENVIRONMENTS.c.state.in_(expect))
    return await store.update_soon(query) > 0
