"""Devservers made from backups: restores (into a new devserver of any flavor in any region, or
some paths into the devserver itself) and cold moves (`leeward move ENV --flavor/--region`).

A move goes by stages, each recorded in its row before the next begins, so that a fleet
restart resumes it where it was (recovery takes moves nobody holds): the final backup; a new
devserver of the asked shape, made from it under a name of its own (its create's idempotency
key is the move's, so a resumed move never makes two); waiting until it answers over SSH with
its host certificate; the hand-over (in one transaction the old one lets the name go, the new
one takes it and the repository, and gets a certificate for it); the old one deleted. Until the
hand-over, a failure leaves the old devserver as it was, running, and says what failed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import asyncssh
from sqlalchemy import select

from leeward.fleet import backup_views, backups
from leeward.fleet.auth import Principal
from leeward.fleet.create import CreateQueue, Restoring, create
from leeward.fleet.errors import Conflict, FleetError, Invalid, NotFound, Unavailable
from leeward.fleet.lifecycle import teardown
from leeward.fleet.ownership import find_environment
from leeward.fleet.provision import fail, restart_agent
from leeward.fleet.resources import fqdn, new_environment_id
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import BackupRepositoryRow, EnvironmentRow, MoveRow
from leeward.providers.base import HostUnreachable, ProviderError
from leeward_protocol.backup import (
    BackupState,
    BackupTrigger,
    Move,
    MoveRequest,
    MoveStage,
    MoveState,
    Restore,
    RestoreRequest,
)
from leeward_protocol.fleet import CreateDevserver, EnvironmentKind, EnvironmentState, Role
from leeward_protocol.host import RestorePathsOrder

log = logging.getLogger(__name__)

START_SECONDS = 1800.0
"""How long a move waits for its new devserver to be made and answer over SSH."""


class MoveFailed(Exception):
    """A stage could not be done; the message says what, for the owner."""


# ---------------------------------------------------------------------------- restores


async def restore(fleet: Fleet, who: Principal, ref: str, request: RestoreRequest) -> Restore:
    async with fleet.store.read() as session:
        env = await backup_views.find_backed_up(session, who, ref)
        backup = await backup_views.find_backup(session, env, request.backup)
        repo = await session.get(BackupRepositoryRow, backup.repository_id)
    assert repo is not None and backup.snapshot is not None
    if request.paths is not None:
        if env.state != EnvironmentState.RUNNING:
            raise Conflict(
                f"{env.name} is {env.state}: paths are restored into a running devserver; "
                "restore into a new one with `--to`."
            )
        order = RestorePathsOrder(
            repository=backups.wire(repo),
            snapshot=backup.snapshot,
            owner=env.owner,
            paths=request.paths,
            folder=backup.snapshot[:8],
        )
        try:
            result = await fleet.provider.restore_paths(env.id, order)
        except HostUnreachable as exc:
            raise Unavailable(
                f"{env.name}'s host cannot be reached now ({exc}); try again."
            ) from None
        except ProviderError as exc:
            raise Invalid(f"The restore from backup {backup.id} failed: {exc}") from None
        return Restore(
            backup=backups.to_backup(backup),
            environment=env.name,
            environment_id=env.id,
            destination=result.destination,
            files=result.files,
            bytes=result.bytes,
        )
    to = request.to
    assert to is not None
    new = CreateDevserver(
        kind=EnvironmentKind.DEVSERVER,
        name=to.name,
        flavor=to.flavor or env.flavor or "",
        region=to.region,
        lifespan=to.lifespan,
        hours=to.hours,
    )
    outcome = await create(CreateQueue(fleet), who, new, None, Restoring(backup.id))
    return Restore(
        backup=backups.to_backup(backup),
        environment=outcome.environment.name,
        environment_id=outcome.environment.id,
    )


# ---------------------------------------------------------------------------- moves


def to_move(row: MoveRow, name: str) -> Move:
    return Move(
        id=row.id,
        environment=name,
        environment_id=row.environment_id,
        flavor=row.flavor,
        region=row.region,
        trigger=row.trigger,
        stage=MoveStage(row.stage),
        state=MoveState(row.state),
        message=row.message,
        backup=row.backup_id,
        target_id=row.target_id,
        started_at=row.started_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


async def start_move(
    fleet: Fleet, who: Principal, ref: str, request: MoveRequest, trigger: str = "user"
) -> Move:
    """Start a cold move of a running devserver; it goes on in the background (poll
    `GET /v1/moves/ID`, or follow the devserver's events)."""
    config = fleet.config
    async with fleet.store.write() as session:
        env = await find_environment(session, who, ref)
        if env.kind != EnvironmentKind.DEVSERVER:
            raise Invalid(f"{env.name} is a container: only devservers move (make a new one).")
        if env.state != EnvironmentState.RUNNING:
            raise Conflict(f"{env.name} is {env.state}; only a running devserver moves.")
        flavor = request.flavor or env.flavor or ""
        if config.flavor(flavor) is None:
            choices = ", ".join(f.name for f in config.flavors)
            raise Invalid(f"Unknown flavor {flavor!r}; choose one of {choices}.", field="flavor")
        if request.region is not None and config.region(request.region) is None:
            names = ", ".join(r.name for r in config.regions)
            raise Invalid(
                f"Unknown region {request.region!r}; choose one of {names}.", field="region"
            )
        region = request.region or ("" if trigger != "user" else env.region)
        if flavor == env.flavor and region == env.region:
            raise Invalid(f"{env.name} is already a {flavor} in {region}.")
        going = await session.scalar(
            select(MoveRow).where(
                MoveRow.environment_id == env.id, MoveRow.state == MoveState.RUNNING.value
            )
        )
        if going is not None:
            raise Conflict(f"{env.name} is already moving (move {going.id}).")
        now = fleet.clock.now()
        row = MoveRow(
            id="m-" + new_environment_id()[2:],
            environment_id=env.id,
            owner=env.owner or "",
            flavor=flavor,
            region=region,
            trigger=trigger,
            stage=MoveStage.BACKING_UP.value,
            state=MoveState.RUNNING.value,
            message="taking a final backup",
            started_at=now,
            updated_at=now,
        )
        session.add(row)
        env.status_message = f"moving to {region or 'where there is room'} ({flavor}): final backup"
        env.updated_at = now
        name = env.name
    fleet.spawn(f"move:{row.id}", run_move(fleet, row.id))
    return to_move(row, name)


async def get_move(fleet: Fleet, who: Principal, move_id: str) -> Move:
    async with fleet.store.read() as session:
        row = await session.get(MoveRow, move_id)
        if row is None or (row.owner != who.user and not who.is_admin):
            raise NotFound(f"No move {move_id!r}.")
        env = await session.get(EnvironmentRow, row.environment_id)
        return to_move(row, env.name if env is not None else "")


async def run_move(fleet: Fleet, move_id: str) -> None:
    """The move's stages, from the one recorded, to its end."""
    while True:
        async with fleet.store.read() as session:
            row = await session.get(MoveRow, move_id)
        if row is None or row.state != MoveState.RUNNING:
            return
        stage = MoveStage(row.stage)
        try:
            following, fields = await _STAGES[stage](fleet, row)
        except (MoveFailed, FleetError) as exc:
            message = exc.message if isinstance(exc, FleetError) else str(exc)
            await _failed(fleet, row, f"{stage.value}: {message}")
            return
        await _record(fleet, move_id, stage=following.value, **fields)
        if following is MoveStage.DONE:
            log.info("move %s of %s done", move_id, row.environment_id)
            return


async def _backing_up(fleet: Fleet, row: MoveRow) -> tuple[MoveStage, dict[str, Any]]:
    trigger = BackupTrigger.DECOMMISSION if row.trigger != "user" else BackupTrigger.MOVE
    done = await backups.back_up_and_wait(fleet, row.environment_id, trigger)
    if done.state != BackupState.SUCCEEDED:
        raise MoveFailed(f"the final backup failed ({done.message})")
    await _tell(fleet, row.environment_id, f"moving to {row.region or 'another host'}: creating")
    return MoveStage.CREATING, {"backup_id": done.id, "message": "creating the new devserver"}


async def _creating(fleet: Fleet, row: MoveRow) -> tuple[MoveStage, dict[str, Any]]:
    async with fleet.store.read() as session:
        env = await session.get(EnvironmentRow, row.environment_id)
    assert env is not None and row.backup_id is not None
    hours = None
    if env.expires_at is not None:
        left = (env.expires_at - fleet.clock.now()).total_seconds() / 3600
        hours = max(1, math.ceil(left))
    new = CreateDevserver(
        kind=EnvironmentKind.DEVSERVER,
        name=_interim_name(env.name, row.id),
        flavor=row.flavor,
        region=row.region or None,
        lifespan=env.lifespan,
        hours=hours,
    )
    owner = Principal(user=row.owner, role=Role.USER)
    restoring = Restoring(row.backup_id, env.backup_repository)
    outcome = await create(CreateQueue(fleet), owner, new, f"move-{row.id}", restoring)
    return MoveStage.STARTING, {
        "target_id": outcome.environment.id,
        "message": f"restoring into {outcome.environment.name} in {outcome.environment.region}",
    }


async def _starting(fleet: Fleet, row: MoveRow) -> tuple[MoveStage, dict[str, Any]]:
    assert row.target_id is not None
    deadline = fleet.clock.monotonic() + START_SECONDS
    while True:
        async with fleet.store.read() as session:
            target = await session.get(EnvironmentRow, row.target_id)
        assert target is not None
        if target.state == EnvironmentState.RUNNING:
            break
        if target.state != EnvironmentState.PROVISIONING:
            raise MoveFailed(f"the new devserver is {target.state}: {target.status_message}")
        if fleet.clock.monotonic() > deadline:
            await _discard(fleet, row.target_id)
            raise MoveFailed(f"the new devserver did not start in {START_SECONDS:.0f} s")
        await fleet.clock.sleep(0.5)  # one step of a poll with a deadline
    if not await answers_over_ssh(fleet, target):
        await _discard(fleet, row.target_id)
        raise MoveFailed("the new devserver does not answer over SSH with its certificate")
    await _tell(fleet, row.environment_id, f"moving: {target.region} answers; handing over")
    return MoveStage.HANDING_OVER, {"message": "handing the name over"}


async def _handing_over(fleet: Fleet, row: MoveRow) -> tuple[MoveStage, dict[str, Any]]:
    now = fleet.clock.now()
    async with fleet.store.write() as session:
        old = await session.get(EnvironmentRow, row.environment_id)
        new = await session.get(EnvironmentRow, row.target_id)
        assert old is not None and new is not None
        if old.moved_to is None:
            name = old.name
            old.live_name, old.moved_to = None, new.id
            old.state = EnvironmentState.DELETING.value
            old.status_message = f"moved to {new.region} ({new.flavor}); deleting"
            old.updated_at = now
            await session.flush()  # the name is free before the new one takes it
            new.name = new.live_name = name
            new.status_message = f"moved here from {old.region} ({old.flavor})"
            new.updated_at = now
    # Its certificate names it by its new name (the SSH alias's HostKeyAlias).
    await restart_agent(fleet, new.id)
    return MoveStage.DELETING, {"message": "deleting the old devserver"}


async def _deleting(fleet: Fleet, row: MoveRow) -> tuple[MoveStage, dict[str, Any]]:
    await teardown(fleet, row.environment_id)
    return MoveStage.DONE, {"state": MoveState.DONE.value, "message": "moved"}


_STAGES = {
    MoveStage.BACKING_UP: _backing_up,
    MoveStage.CREATING: _creating,
    MoveStage.STARTING: _starting,
    MoveStage.HANDING_OVER: _handing_over,
    MoveStage.DELETING: _deleting,
}


def _interim_name(name: str, move_id: str) -> str:
    """The new devserver's name until the hand-over: a valid name of its own."""
    return f"{name[:22].rstrip('-')}-mv-{move_id[-5:]}"


async def answers_over_ssh(fleet: Fleet, env: EnvironmentRow) -> bool:
    """Whether the devserver's SSH server answers with a host certificate of this fleet's for
    it (the key exchange done and the host verified; logging in is not tried)."""
    assert env.address is not None and env.ssh_port is not None
    trusted = asyncssh.import_known_hosts(
        f"@cert-authority {env.id} {fleet.authority.host_ca_public}\n"
    )
    try:
        async with asyncio.timeout(20):
            conn = await asyncssh.connect(
                env.address,
                env.ssh_port,
                known_hosts=trusted,
                host_key_alias=env.id,
                username="leeward-move-check",
                client_keys=None,
                agent_path=None,
                password=None,
                kbdint_auth=False,
                config=[],
            )
            conn.close()
    except asyncssh.PermissionDenied:
        return True  # it proved who it is, then refused a nobody: what was asked
    except (OSError, TimeoutError, asyncssh.Error) as exc:
        log.warning("ssh check of %s (%s) failed: %s", env.id, fqdn(env, fleet.config.zone), exc)
        return False
    return True


async def _discard(fleet: Fleet, env_id: str) -> None:
    """The new devserver of a failed move: gone."""
    await fail(fleet, env_id, "its move failed; removed")


async def _tell(fleet: Fleet, env_id: str, message: str) -> None:
    async with fleet.store.write() as session:
        env = await session.get(EnvironmentRow, env_id)
        if env is not None and env.state == EnvironmentState.RUNNING:
            env.status_message, env.updated_at = message, fleet.clock.now()


async def _failed(fleet: Fleet, row: MoveRow, why: str) -> None:
    log.warning("move %s of %s failed: %s", row.id, row.environment_id, why)
    await _record(fleet, row.id, state=MoveState.FAILED.value, message=why)
    await _tell(fleet, row.environment_id, f"the move failed ({why}); still here, unchanged")


async def _record(fleet: Fleet, move_id: str, **fields: Any) -> None:
    now = fleet.clock.now()
    async with fleet.store.write() as session:
        row = await session.get(MoveRow, move_id)
        assert row is not None
        for name, value in fields.items():
            setattr(row, name, value)
        row.updated_at = now
        if fields.get("state") in (MoveState.DONE.value, MoveState.FAILED.value):
            row.finished_at = now


async def resume_moves(fleet: Fleet) -> int:
    """Take the moves nobody holds (their replica stopped): each goes on from its stage."""
    async with fleet.store.read() as session:
        ids = (
            (await session.execute(select(MoveRow.id).where(MoveRow.state == "running")))
            .scalars()
            .all()
        )
    ids = [i for i in ids if fleet.at_work(f"move:{i}") is None]
    held = await fleet.leases.holders(f"move:{i}" for i in ids)
    taken = [i for i in ids if f"move:{i}" not in held]
    for move_id in taken:
        fleet.spawn(f"move:{move_id}", run_move(fleet, move_id), takeover=True)
    return len(taken)
