"""Creating environments: the request checked against the catalog, its expiry, idempotency
keys, and the create queue that places requests arriving together in one write transaction,
then starts what follows (the agent's start, or a warm container's hand-over)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.common.backoff import Backoff
from leeward.fleet.auth import Principal
from leeward.fleet.config import FleetConfig
from leeward.fleet.errors import Conflict, FleetError, Invalid, Unavailable
from leeward.fleet.placement import Batch, NewEnvironment, place
from leeward.fleet.pools import claim_warm
from leeward.fleet.provision import hand_over, issue_identity, provision
from leeward.fleet.resources import new_name, to_resource
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.db import is_transient
from leeward.fleet.store.models import EnvironmentRow, IdempotencyRow
from leeward.providers.base import Identity
from leeward_protocol.fleet import (
    CreateContainer,
    CreateDevserver,
    Environment,
    EnvironmentKind,
    Hardware,
    Lifespan,
)

log = logging.getLogger(__name__)

_BATCH = 64
"""Most create requests placed in one write transaction."""

_TRANSIENT_ATTEMPTS = 4
"""Tries of a placement transaction that PostgreSQL rolls back as a deadlock's victim."""

_Placed = tuple[EnvironmentRow, Identity | None, str]
"""A placement: the row, the identity to start it with (None for a replay), and how it was
made: "cold" (placed, to be started), "warm" (claimed from a pool) or "replay"."""

_Leased = tuple[EnvironmentRow, Identity | None, str, str | None]
"""A committed placement, and the ticket of its lease (None for a replay)."""


@dataclass
class Outcome:
    environment: Environment
    created: bool
    """False when an Idempotency-Key replay returned an environment made earlier."""
    source: str = "cold"
    """"warm" when claimed from a pool, "cold" when placed and started."""


@dataclass
class _Answer:
    """What a create request gets back from its batch. The work that follows a placement (the
    agent's start, a warm container's hand-over) is already under way when the caller hears of
    it, so a caller that goes away cannot leave an environment half made."""

    row: EnvironmentRow
    source: str
    handover: asyncio.Task[Environment] | None = None


@dataclass
class _Ask:
    """A create request waiting for its batch."""

    who: Principal
    request: CreateDevserver | CreateContainer
    need: Hardware
    key: str | None
    digest: str
    future: asyncio.Future[_Answer]
    restore: Restoring | None = None


@dataclass(frozen=True)
class Restoring:
    """A devserver made from a backup (leeward.fleet.moves): its home is restored from
    `backup` before its agent first starts; `repository` is the one it is backed up to from
    then on (a move hands the old one's over; None: a repository of its own)."""

    backup: int
    repository: str | None = None


@dataclass
class CreateQueue:
    """The create requests waiting for their batch, and the one task placing them (started by
    the first request that finds none at work; the fleet cancels it when it closes)."""

    fleet: Fleet
    waiting: list[_Ask] = field(default_factory=list)
    placer: asyncio.Task[None] | None = None


# ---------------------------------------------------------------------------- the request


def check_request(config: FleetConfig, request: CreateDevserver | CreateContainer) -> Hardware:
    """The hardware `request` needs, once its region, flavor or profile and hours are ones the
    catalog offers; Invalid (naming the field) otherwise."""
    names = ", ".join(r.name for r in config.regions)
    if request.region is not None and config.region(request.region) is None:
        raise Invalid(f"Unknown region {request.region!r}; choose one of {names}.", field="region")
    lt = config.lifetimes
    if isinstance(request, CreateDevserver):
        flavor = config.flavor(request.flavor)
        if flavor is None:
            choices = ", ".join(f.name for f in config.flavors)
            raise Invalid(
                f"Unknown flavor {request.flavor!r}; choose one of {choices}.", field="flavor"
            )
        if request.hours is not None and request.hours > lt.devserver_max_hours:
            raise Invalid(
                f"A devserver lives at most {lt.devserver_max_hours} hours; ask for fewer "
                "or make it permanent.",
                field="hours",
            )
        return flavor.hardware
    profile = config.profile(request.profile)
    if profile is None:
        choices = ", ".join(p.name for p in config.profiles) or "(none configured)"
        raise Invalid(
            f"Unknown container profile {request.profile!r}; choose one of {choices}.",
            field="profile",
        )
    if request.hours is not None and request.hours > lt.container_max_hours:
        raise Invalid(
            f"A container lives at most {lt.container_max_hours} hours; ask for fewer.",
            field="hours",
        )
    return profile.hardware


def expiry(
    config: FleetConfig, request: CreateDevserver | CreateContainer, now: datetime
) -> datetime | None:
    lt = config.lifetimes
    if isinstance(request, CreateDevserver):
        if request.lifespan is Lifespan.PERMANENT:
            return None
        return now + timedelta(hours=request.hours or lt.devserver_default_hours)
    return now + timedelta(hours=request.hours or lt.container_hours)


# ---------------------------------------------------------------------------- the queue


async def create(
    queue: CreateQueue,
    who: Principal,
    request: CreateDevserver | CreateContainer,
    idempotency_key: str | None = None,
    restore: Restoring | None = None,
) -> Outcome:
    """Create an environment: claimed from a warm pool (ready when this returns) or placed
    on a host (its agent starts in the background).

    Requests that arrive together are placed together, in one write transaction: the
    store's per-transaction cost is paid once per batch, not once per request, and the
    capacity each placement takes is counted in memory for the next one in the batch."""
    fleet = queue.fleet
    need = check_request(fleet.config, request)
    request_digest = hashlib.sha256(json.dumps(request.wire(), sort_keys=True).encode()).hexdigest()
    started = fleet.clock.monotonic()
    loop = asyncio.get_running_loop()
    for attempt in range(3):
        future = loop.create_future()
        ask = _Ask(who, request, need, idempotency_key, request_digest, future, restore)
        queue.waiting.append(ask)
        if queue.placer is None or queue.placer.done():
            queue.placer = fleet.start_task(_place_queued(queue), "placement")
        try:
            answer = await ask.future
            break
        except IntegrityError as exc:
            # Another replica took the same name or key at the same moment: look again.
            if attempt == 2:
                raise Conflict(
                    "Another request changed the same environment at the same time; try again."
                ) from exc
    if answer.source == "replay":
        return Outcome(to_resource(answer.row, fleet.config.zone), created=False)
    if answer.handover is not None:
        env = await asyncio.shield(answer.handover)
        outcome = Outcome(env, created=True, source="warm")
    else:
        outcome = Outcome(to_resource(answer.row, fleet.config.zone), created=True)
    for observe in fleet.observers:
        observe(outcome.source, fleet.clock.monotonic() - started)
    return outcome


async def _place_queued(queue: CreateQueue) -> None:
    """Drain the queue of create requests, a batch per write transaction."""
    while queue.waiting:
        batch, queue.waiting = queue.waiting[:_BATCH], queue.waiting[_BATCH:]
        try:
            try:
                results = await _place_batch(queue.fleet, batch)
            except Exception:
                if len(batch) == 1:
                    raise
                # One request spoiled the batch (a name another replica took at the same
                # moment, say): place each alone, so that only that one fails.
                results = []
                for ask in batch:
                    try:
                        results.extend(await _place_batch(queue.fleet, [ask]))
                    except Exception as exc:
                        results.append((ask, exc))
        except asyncio.CancelledError:
            for ask in batch:
                if not ask.future.done():
                    ask.future.set_exception(Unavailable("The fleet is stopping; try again."))
            raise
        except Exception as exc:
            results = [(batch[0], exc)]
        for ask, result in results:
            if isinstance(result, BaseException):
                if not ask.future.done():
                    ask.future.set_exception(result)
                continue
            answer = _follow_up(queue.fleet, *result)
            if not ask.future.done():
                ask.future.set_result(answer)


def _follow_up(
    fleet: Fleet, row: EnvironmentRow, identity: Identity | None, source: str, ticket: str | None
) -> _Answer:
    """Start what a committed placement needs next, whoever is still waiting for it."""
    if source == "cold":
        assert identity is not None and ticket is not None
        fleet.spawn(row.id, provision(fleet, row.id, identity, placed=row), granted=ticket)
        return _Answer(row, source)
    if source == "warm":
        assert identity is not None and ticket is not None
        handover = fleet.start_task(hand_over(fleet, row, identity, ticket), f"handover:{row.id}")
        return _Answer(row, source, handover)
    return _Answer(row, source)


async def _place_batch(
    fleet: Fleet, batch: list[_Ask]
) -> list[tuple[_Ask, _Leased | BaseException]]:
    now = fleet.clock.now()
    backoff = Backoff(base=0.01, cap=0.05)  # jittered: the other transaction may retry too
    for attempt in range(1, _TRANSIENT_ATTEMPTS + 1):
        results: list[tuple[_Ask, _Placed | BaseException]] = []
        try:
            async with fleet.store.write() as session:
                work = Batch()
                for ask in batch:
                    try:
                        results.append((ask, await _create_in(fleet, session, work, ask, now)))
                    except FleetError as exc:
                        results.append((ask, exc))
                await work.flush(session)
                # Leased to this replica in the transaction that makes (or claims) them: no
                # other replica's recovery ever takes their start for an orphan's.
                tickets = await fleet.leases.grant(
                    session,
                    (
                        f"env:{placed[0].id}"
                        for _, placed in results
                        if not isinstance(placed, BaseException) and placed[2] != "replay"
                    ),
                )
        except Exception as exc:
            # PostgreSQL chose this transaction as a deadlock's victim (the hosts it locks
            # against a group commit's row locks); it was rolled back whole: run it again.
            if attempt == _TRANSIENT_ATTEMPTS or not is_transient(exc):
                raise
            log.warning("placement batch rolled back (%s); again", type(exc.__cause__).__name__)
            await asyncio.sleep(backoff.next())
            continue
        return [
            (ask, p if isinstance(p, BaseException) else (*p, tickets.get(f"env:{p[0].id}")))
            for ask, p in results
        ]
    raise AssertionError("unreachable")  # pragma: no cover


async def _create_in(
    fleet: Fleet, session: AsyncSession, work: Batch, ask: _Ask, now: datetime
) -> _Placed:
    """One create request inside a batch's transaction. A refusal (FleetError) is raised
    before this request writes anything, so the rest of the batch goes on."""
    who, request, key = ask.who, ask.request, ask.key
    if key is not None:
        seen_digest, seen_id = work.keys.get((who.user, key), (None, None))
        if seen_id is None:
            seen = await session.scalar(
                select(IdempotencyRow).where(
                    IdempotencyRow.user == who.user, IdempotencyRow.key == key
                )
            )
            if seen is not None:
                seen_digest, seen_id = seen.request_digest, seen.environment_id
        if seen_id is not None:
            if seen_digest != ask.digest:
                raise Conflict(
                    "This Idempotency-Key was used for a different request; use a new "
                    "key for a new environment.",
                    field="Idempotency-Key",
                )
            row = work.made.get(seen_id) or await session.get(EnvironmentRow, seen_id)
            assert row is not None
            return row, None, "replay"
    if not fleet.provider.isolates_owners:
        other = await session.scalar(
            select(EnvironmentRow.owner)
            .where(EnvironmentRow.live_name.is_not(None), EnvironmentRow.owner != who.user)
            .limit(1)
        )
        if other is not None:
            raise Conflict(
                f"This fleet serves one user only ({fleet.provider.isolation}), and another "
                "user has environments here: it cannot keep one user's environments from "
                "another's. An operator can give it sandboxes (docs/operator.md)."
            )
    if request.name is not None:
        taken = request.name in work.names or await session.scalar(
            select(func.count()).where(EnvironmentRow.live_name == request.name)
        )
        if taken:
            raise Conflict(
                f"The name {request.name!r} is taken; choose another or leave it out.",
                field="name",
            )
    claimed = None
    if isinstance(request, CreateContainer):
        claimed = await claim_warm(session, who, request, expiry(fleet.config, request, now), now)
    if claimed is not None:
        row, source = claimed, "warm"
    else:
        new = _new_environment(fleet.config, who, request, ask.need, now)
        row, source = await place(session, work, fleet.config, new, now), "cold"
    # The identity it will start with. A claimed warm container's tenant's replaces the pool's
    # in this same transaction: from here on only the new agent token is accepted, whatever
    # happens next.
    identity, row.agent_token_digest = issue_identity(
        fleet.authority, fleet.config.zone, row, fleet.clock.now()
    )
    if ask.restore is not None:
        row.restore_from = ask.restore.backup
        row.backup_repository = ask.restore.repository
        row.status_message = f"restoring its home from backup {ask.restore.backup}"
    work.names.add(row.name)
    if key is not None:
        work.keys[(who.user, key)] = (ask.digest, row.id)
        work.idempotency.append(
            {
                "user": who.user,
                "key": key,
                "request_digest": ask.digest,
                "environment_id": row.id,
                "created_at": now,
            }
        )
    return row, identity, source


def _new_environment(
    config: FleetConfig,
    who: Principal,
    request: CreateDevserver | CreateContainer,
    need: Hardware,
    now: datetime,
) -> NewEnvironment:
    """What `who` asked for, to be placed on a host."""
    kind = request.kind
    profile = request.profile if isinstance(request, CreateContainer) else None
    return NewEnvironment(
        name=request.name
        or new_name("dev" if kind is EnvironmentKind.DEVSERVER else (profile or "ctr")),
        kind=kind,
        need=need,
        region=request.region,
        owner=who.user,
        flavor=request.flavor if isinstance(request, CreateDevserver) else None,
        profile=profile,
        lifespan=request.lifespan if isinstance(request, CreateDevserver) else Lifespan.TEMPORARY,
        expires_at=expiry(config, request, now),
    )
