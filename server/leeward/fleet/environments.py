"""Environments' lives: create (cold or from a warm pool), provision, delete, extend, expire,
and recover after a restart of the fleet.

The `Fleet` holds what the operations need (store, config, clock, provider, CA) and the
background work they start. Every state change is a short write transaction (creates that
arrive together share one, and so do small updates); the slow parts (starting an agent) happen
between transactions, and a restart picks them up where they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.common.clock import Clock
from leeward.fleet.auth import Principal, TokenVerifier, digest, new_secret
from leeward.fleet.ca import CertificateAuthority
from leeward.fleet.config import FleetConfig
from leeward.fleet.errors import Conflict, FleetError, Invalid, NoCapacity, NotFound, Unavailable
from leeward.fleet.events import EventLog
from leeward.fleet.placement import LIVE, HostUsage, choose_host, host_usage, reserve_addresses
from leeward.fleet.profiles import ProfileStore
from leeward.fleet.resources import (
    ENVIRONMENTS,
    SETUP_ITEMS,
    new_environment_id,
    new_name,
    to_resource,
    update_environment,
)
from leeward.fleet.setup import setup_steps
from leeward.fleet.store.db import Store, is_transient
from leeward.fleet.store.models import EnvironmentRow, HostRow, IdempotencyRow
from leeward.providers.base import EnvironmentSpec, Identity, Provider, ProviderError
from leeward_protocol.fleet import (
    AgentReport,
    Catalog,
    CreateContainer,
    CreateDevserver,
    Environment,
    EnvironmentKind,
    EnvironmentState,
    Hardware,
    HostState,
    Lifespan,
    LifespanPolicy,
    Region,
    Role,
)
from leeward_protocol.profile import AgentProfile

log = logging.getLogger(__name__)

_ENV_TABLE = ENVIRONMENTS
_ENV_COLUMNS = list(_ENV_TABLE.columns)
_SETUP = SETUP_ITEMS


_BATCH = 64
"""Most create requests placed in one write transaction."""

DRAIN_PARALLEL = 4
"""Environments a drain moves at once."""

DRAIN_TIMEOUT_SECONDS = 3600.0

_TRANSIENT_ATTEMPTS = 4
"""Tries of a placement transaction that PostgreSQL rolls back as a deadlock's victim."""

_Placed = tuple[EnvironmentRow, Identity | None, str]
"""A placement: the row, the identity to start it with (None for a replay), and how it was
made: "cold" (placed, to be started), "warm" (claimed from a pool) or "replay"."""


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


@dataclass
class _Batch:
    """What one placement transaction has decided so far, before it is written."""

    hosts: list[HostUsage] | None = None
    names: set[str] = field(default_factory=set)
    keys: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    made: dict[str, EnvironmentRow] = field(default_factory=dict)
    idempotency: list[dict[str, Any]] = field(default_factory=list)

    async def usage(self, session: AsyncSession) -> list[HostUsage]:
        """Every host's usage, read (and on PostgreSQL locked, all hosts in name order, so two
        replicas' batches never deadlock) once; later placements are counted in memory."""
        if self.hosts is None:
            self.hosts = await host_usage(session, lock=True)
        return self.hosts

    def take(self, host: HostUsage, need: Hardware) -> None:
        assert self.hosts is not None
        used = host.used
        self.hosts[self.hosts.index(host)] = replace(
            host,
            used=Hardware(
                cpus=used.cpus + need.cpus,
                memory_gib=used.memory_gib + need.memory_gib,
                gpus=used.gpus + need.gpus,
            ),
            environments=host.environments + 1,
        )

    async def flush(self, session: AsyncSession) -> None:
        """Give the batch's new environments their addresses (one reservation per region), then
        write them and their idempotency keys as Core inserts (the ORM's unit of work costs
        more than placement itself)."""
        by_region: dict[str, list[EnvironmentRow]] = {}
        for row in self.made.values():
            if row.address is None:
                by_region.setdefault(row.region, []).append(row)
        for region, rows in by_region.items():
            for row, address in zip(
                rows, await reserve_addresses(session, region, len(rows)), strict=True
            ):
                row.address = row.live_address = address
        if self.made:
            await session.execute(
                insert(EnvironmentRow),
                [{c.key: getattr(row, c.key) for c in _ENV_COLUMNS} for row in self.made.values()],
            )
        if self.idempotency:
            await session.execute(insert(IdempotencyRow), self.idempotency)


@dataclass
class Outcome:
    environment: Environment
    created: bool
    """False when an Idempotency-Key replay returned an environment made earlier."""
    source: str = "cold"
    """"warm" when claimed from a pool, "cold" when placed and started."""


class Fleet:
    def __init__(
        self,
        config: FleetConfig,
        store: Store,
        provider: Provider,
        authority: CertificateAuthority,
        clock: Clock,
    ) -> None:
        self.config = config
        self.store = store
        self.provider = provider
        self.authority = authority
        self.clock = clock
        self.tokens = TokenVerifier(store, clock)
        self.profiles = ProfileStore(store, config, clock)
        self.events = EventLog(store, config.zone, clock, poll_seconds=config.event_poll_seconds)
        self.public_url: str | None = config.public_url
        self.url_known = asyncio.Event()
        if self.public_url:
            self.url_known.set()
        self.observers: list[Callable[[str, float], None]] = []
        self.region_probes: dict[str, str] = {}
        """Region -> HOST:PORT of its gateway, which clients time to measure their RTT."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._asks: list[_Ask] = []
        self._placer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False

    # ------------------------------------------------------------------ lifecycle

    def set_public_url(self, url: str) -> None:
        self.public_url = url.rstrip("/")
        self.url_known.set()

    async def close(self) -> None:
        self._closing = True
        await self.events.close()
        tasks = list(self._tasks.values()) + list(self._background)
        if self._placer is not None:
            tasks.append(self._placer)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _spawn(self, key: str, work: Awaitable[None]) -> None:
        """Run per-environment work in the background, one task per environment at a time."""

        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background work for %s failed", key)
            finally:
                if self._tasks.get(key) is task:
                    del self._tasks[key]

        previous = self._tasks.get(key)
        task = asyncio.get_running_loop().create_task(run(), name=f"env:{key}")
        if previous is not None and not previous.done():
            # Keep the older one referenced until it finishes; the newer supersedes it.
            self._background.add(previous)
            previous.add_done_callback(self._background.discard)
        self._tasks[key] = task

    async def idle(self) -> None:
        """Wait until no per-environment work is in flight (tests and shutdown use it)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # ------------------------------------------------------------------ catalog

    async def catalog(self) -> Catalog:
        async with self.store.read() as session:
            usage = await host_usage(session)
        regions = []
        for region in self.config.regions:
            hosts = [h for h in usage if h.region == region.name]
            active = [h for h in hosts if h.state is HostState.ACTIVE]
            regions.append(
                Region(
                    name=region.name,
                    display_name=region.display_name,
                    accepting=bool(active),
                    hosts=len(hosts),
                    capacity=_sum(h.capacity for h in hosts),
                    free=_sum(h.free for h in active),
                    largest_free=max(
                        (h.free for h in active),
                        key=lambda f: (f.memory_gib, f.cpus, f.gpus),
                        default=Hardware(cpus=0, memory_gib=0, gpus=0),
                    ),
                    probe=self.region_probes.get(region.name),
                )
            )
        lt = self.config.lifetimes
        return Catalog(
            zone=self.config.zone,
            regions=regions,
            flavors=self.config.flavors,
            profiles=self.config.profiles,
            lifespans=LifespanPolicy(
                devserver_default_hours=lt.devserver_default_hours,
                devserver_max_hours=lt.devserver_max_hours,
                container_hours=lt.container_hours,
                container_max_hours=lt.container_max_hours,
            ),
        )

    # ------------------------------------------------------------------ reads

    async def list_environments(
        self, who: Principal, *, everyone: bool = False
    ) -> list[Environment]:
        query = select(EnvironmentRow).where(
            EnvironmentRow.state.in_(
                [
                    EnvironmentState.PROVISIONING,
                    EnvironmentState.RUNNING,
                    EnvironmentState.MIGRATING,
                    EnvironmentState.DELETING,
                    EnvironmentState.FAILED,
                ]
            )
        )
        if not (everyone and who.is_admin):
            query = query.where(EnvironmentRow.owner == who.user)
        async with self.store.read() as session:
            rows = (await session.execute(query.order_by(EnvironmentRow.created_at))).scalars()
            return [to_resource(r, self.config.zone) for r in rows]

    async def get_environment(self, who: Principal, ref: str) -> Environment:
        async with self.store.read() as session:
            row = await self._find(session, who, ref)
            return to_resource(row, self.config.zone)

    async def _find(self, session: AsyncSession, who: Principal, ref: str) -> EnvironmentRow:
        """By id, or by name among live environments. Someone else's is a 404, not a 403: it is
        none of the caller's business whether it exists."""
        row = await session.get(EnvironmentRow, ref)
        if row is None:
            row = await session.scalar(
                select(EnvironmentRow).where(EnvironmentRow.live_name == ref)
            )
        if row is None or row.state == EnvironmentState.WARM or row.owner is None:
            raise NotFound(f"No environment {ref!r}: `leeward list` shows yours.")
        if row.owner != who.user and not who.is_admin:
            raise NotFound(f"No environment {ref!r}: `leeward list` shows yours.")
        return row

    # ------------------------------------------------------------------ create

    def _check_request(self, request: CreateDevserver | CreateContainer) -> Hardware:
        names = ", ".join(r.name for r in self.config.regions)
        if request.region is not None and self.config.region(request.region) is None:
            raise Invalid(
                f"Unknown region {request.region!r}; choose one of {names}.", field="region"
            )
        lt = self.config.lifetimes
        if isinstance(request, CreateDevserver):
            flavor = self.config.flavor(request.flavor)
            if flavor is None:
                choices = ", ".join(f.name for f in self.config.flavors)
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
        profile = self.config.profile(request.profile)
        if profile is None:
            choices = ", ".join(p.name for p in self.config.profiles) or "(none configured)"
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

    async def create(
        self,
        who: Principal,
        request: CreateDevserver | CreateContainer,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Create an environment: claimed from a warm pool (ready when this returns) or placed
        on a host (its agent starts in the background).

        Requests that arrive together are placed together, in one write transaction: the
        store's per-transaction cost is paid once per batch, not once per request, and the
        capacity each placement takes is counted in memory for the next one in the batch."""
        need = self._check_request(request)
        request_digest = hashlib.sha256(
            json.dumps(request.wire(), sort_keys=True).encode()
        ).hexdigest()
        started = self.clock.monotonic()
        loop = asyncio.get_running_loop()
        for attempt in range(3):
            ask = _Ask(who, request, need, idempotency_key, request_digest, loop.create_future())
            self._asks.append(ask)
            if self._placer is None or self._placer.done():
                self._placer = loop.create_task(self._place_queued(), name="placement")
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
            return Outcome(to_resource(answer.row, self.config.zone), created=False)
        if answer.handover is not None:
            env = await asyncio.shield(answer.handover)
            outcome = Outcome(env, created=True, source="warm")
        else:
            outcome = Outcome(to_resource(answer.row, self.config.zone), created=True)
        for observe in self.observers:
            observe(outcome.source, self.clock.monotonic() - started)
        return outcome

    async def _place_queued(self) -> None:
        """Drain the queue of create requests, a batch per write transaction."""
        while self._asks:
            batch, self._asks = self._asks[:_BATCH], self._asks[_BATCH:]
            try:
                try:
                    results = await self._place_batch(batch)
                except Exception:
                    if len(batch) == 1:
                        raise
                    # One request spoiled the batch (a name another replica took at the same
                    # moment, say): place each alone, so that only that one fails.
                    results = []
                    for ask in batch:
                        try:
                            results.extend(await self._place_batch([ask]))
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
                answer = self._follow_up(*result)
                if not ask.future.done():
                    ask.future.set_result(answer)

    def _follow_up(self, row: EnvironmentRow, identity: Identity | None, source: str) -> _Answer:
        """Start what a committed placement needs next, whoever is still waiting for it."""
        if source == "cold":
            assert identity is not None
            self._spawn(row.id, self._provision(row.id, identity, placed=row))
            return _Answer(row, source)
        if source == "warm":
            assert identity is not None
            handover = asyncio.get_running_loop().create_task(
                self._assign(row, identity), name=f"handover:{row.id}"
            )
            self._background.add(handover)
            handover.add_done_callback(_settled(self._background))
            return _Answer(row, source, handover)
        return _Answer(row, source)

    async def _place_batch(self, batch: list[_Ask]) -> list[tuple[_Ask, _Placed | BaseException]]:
        now = self.clock.now()
        for attempt in range(1, _TRANSIENT_ATTEMPTS + 1):
            results: list[tuple[_Ask, _Placed | BaseException]] = []
            try:
                async with self.store.write() as session:
                    work = _Batch()
                    for ask in batch:
                        try:
                            results.append((ask, await self._create_in(session, work, ask, now)))
                        except FleetError as exc:
                            results.append((ask, exc))
                    await work.flush(session)
            except Exception as exc:
                # PostgreSQL chose this transaction as a deadlock's victim (the hosts it locks
                # against a group commit's row locks); it was rolled back whole: run it again.
                if attempt == _TRANSIENT_ATTEMPTS or not is_transient(exc):
                    raise
                log.warning("placement batch rolled back (%s); again", type(exc.__cause__).__name__)
                await asyncio.sleep(0.01 * attempt)
                continue
            return results
        raise AssertionError("unreachable")  # pragma: no cover

    async def _create_in(
        self, session: AsyncSession, work: _Batch, ask: _Ask, now: datetime
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
        if request.name is not None:
            taken = request.name in work.names or await session.scalar(
                select(func.count()).where(EnvironmentRow.live_name == request.name)
            )
            if taken:
                raise Conflict(
                    f"The name {request.name!r} is taken; choose another or leave it out.",
                    field="name",
                )
        placed = None
        source = "cold"
        if isinstance(request, CreateContainer):
            placed = await self._claim_warm(session, who, request, now)
            source = "warm" if placed is not None else "cold"
        if placed is None:
            placed = await self._place(session, work, who, request, ask.need, now)
        row, identity = placed
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

    def _expiry(self, request: CreateDevserver | CreateContainer, now: datetime) -> datetime | None:
        lt = self.config.lifetimes
        if isinstance(request, CreateDevserver):
            if request.lifespan is Lifespan.PERMANENT:
                return None
            return now + timedelta(hours=request.hours or lt.devserver_default_hours)
        return now + timedelta(hours=request.hours or lt.container_hours)

    @staticmethod
    def _new_name(prefix: str) -> str:
        return new_name(prefix)

    def _regions_in_order(
        self, usage: list[HostUsage], asked: str | None, need: Hardware
    ) -> list[str]:
        if asked is not None:
            return [asked]
        if len(self.config.regions) == 1:
            return [self.config.regions[0].name]

        # The region with the most free room that fits first.
        def room(region: str) -> tuple[int, int]:
            free = [
                h.free
                for h in usage
                if h.region == region and h.state is HostState.ACTIVE and need.fits_in(h.free)
            ]
            return (len(free), sum(f.memory_gib for f in free))

        names = [r.name for r in self.config.regions]
        return sorted(names, key=room, reverse=True)

    async def _place(
        self,
        session: AsyncSession,
        work: _Batch,
        who: Principal | None,
        request: CreateDevserver | CreateContainer | None,
        need: Hardware,
        now: datetime,
        *,
        region: str | None = None,
        profile: str | None = None,
    ) -> tuple[EnvironmentRow, Identity]:
        """Place a new environment (a user's, or a warm container when `who` is None), with
        the identity it will start with. The row is written when the batch flushes."""
        asked = request.region if request is not None else region
        usage = await work.usage(session)
        host = None
        for candidate in self._regions_in_order(usage, asked, need):
            host = choose_host([h for h in usage if h.region == candidate], need)
            if host is not None:
                break
        if host is None:
            raise self._no_capacity(usage, asked, need)
        work.take(host, need)
        if request is None:
            kind, flavor, lifespan, expires = (
                EnvironmentKind.CONTAINER,
                None,
                Lifespan.TEMPORARY,
                None,
            )
            name = self._new_name(f"{profile}-warm")
        else:
            kind = request.kind
            flavor = request.flavor if isinstance(request, CreateDevserver) else None
            profile = request.profile if isinstance(request, CreateContainer) else None
            lifespan = (
                request.lifespan if isinstance(request, CreateDevserver) else Lifespan.TEMPORARY
            )
            expires = self._expiry(request, now)
            name = request.name or self._new_name(
                "dev" if kind is EnvironmentKind.DEVSERVER else (profile or "ctr")
            )
        row = EnvironmentRow(
            id=new_environment_id(),
            name=name,
            live_name=name,
            kind=kind.value,
            flavor=flavor,
            profile=profile,
            cpus=need.cpus,
            memory_gib=need.memory_gib,
            gpus=need.gpus,
            region=host.region,
            host=host.name,
            address=None,  # reserved for the whole batch when it is written
            ssh_port=self.config.provider.ssh_port,
            state=EnvironmentState.PROVISIONING.value,
            status_message=f"placed on {host.name}; certified; starting",
            owner=who.user if who else None,
            lifespan=lifespan.value,
            expires_at=expires,
            created_at=now,
            updated_at=now,
        )
        identity, row.agent_token_digest = self._identity(row)
        work.made[row.id] = row
        return row, identity

    def _no_capacity(self, usage: list[HostUsage], asked: str | None, need: Hardware) -> NoCapacity:
        with_room = sorted(
            {
                h.region
                for h in usage
                if h.state is HostState.ACTIVE and need.fits_in(h.free) and h.region != asked
            }
        )
        if asked is None:
            return NoCapacity(
                "No region has room for this environment now; try a smaller flavor or later.",
                regions_with_room=[],
            )
        if with_room:
            return NoCapacity(
                f"Region {asked} has no room for this environment now; "
                f"{', '.join(with_room)} {'has' if len(with_room) == 1 else 'have'} room.",
                field="region",
                regions_with_room=with_room,
            )
        return NoCapacity(
            f"Region {asked} has no room for this environment now, and no other region has "
            "either; try a smaller flavor or later.",
            field="region",
            regions_with_room=[],
        )

    # ------------------------------------------------------------------ warm pools

    async def _claim_warm(
        self, session: AsyncSession, who: Principal, request: CreateContainer, now: datetime
    ) -> tuple[EnvironmentRow, Identity] | None:
        query = (
            select(EnvironmentRow)
            .where(
                EnvironmentRow.state == EnvironmentState.WARM.value,
                EnvironmentRow.profile == request.profile,
                EnvironmentRow.owner.is_(None),
            )
            .order_by(EnvironmentRow.created_at)
            .limit(1)
        )
        if request.region is not None:
            query = query.where(EnvironmentRow.region == request.region)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        row = await session.scalar(query)
        if row is None:
            return None
        name = request.name or self._new_name(request.profile)
        row.name = name
        row.live_name = name
        row.owner = who.user
        row.state = EnvironmentState.PROVISIONING.value
        row.status_message = "claimed from the warm pool"
        row.expires_at = self._expiry(request, now)
        row.created_at = now
        row.updated_at = now
        # The tenant's identity replaces the pool's in this same transaction: from here on
        # only the new agent token is accepted, whatever happens next.
        identity, row.agent_token_digest = self._identity(row)
        await session.flush()
        return row, identity

    async def refill_pools(self) -> int:
        """Start warm containers until every (region, profile) pool is full; returns how many."""
        wanted: list[tuple[str, str, Hardware]] = []
        async with self.store.read() as session:
            rows = await session.execute(
                select(EnvironmentRow.region, EnvironmentRow.profile, func.count())
                .where(
                    EnvironmentRow.owner.is_(None),
                    EnvironmentRow.state.in_(
                        [EnvironmentState.WARM.value, EnvironmentState.PROVISIONING.value]
                    ),
                )
                .group_by(EnvironmentRow.region, EnvironmentRow.profile)
            )
            counts = {(region, profile): n for region, profile, n in rows.all()}
        for region in self.config.regions:
            for profile in self.config.profiles:
                missing = profile.warm_pool - counts.get((region.name, profile.name), 0)
                wanted.extend((region.name, profile.name, profile.hardware) for _ in range(missing))
        if not wanted:
            return 0
        placed = []
        async with self.store.write() as session:
            work = _Batch()
            for region_name, profile_name, need in wanted:
                try:
                    placed.append(
                        await self._place(
                            session,
                            work,
                            None,
                            None,
                            need,
                            self.clock.now(),
                            region=region_name,
                            profile=profile_name,
                        )
                    )
                except NoCapacity:
                    continue
            await work.flush(session)
        for row, identity in placed:
            self._spawn(row.id, self._provision(row.id, identity, placed=row))
        return len(placed)

    # ------------------------------------------------------------------ provisioning

    def _spec(self, row: EnvironmentRow, identity: Identity) -> EnvironmentSpec:
        assert row.host and row.address and row.ssh_port and self.public_url
        return EnvironmentSpec(
            id=row.id,
            name=row.name,
            fqdn=f"{row.name}.{row.region}.{self.config.zone}",
            kind=EnvironmentKind(row.kind),
            region=row.region,
            host=row.host,
            address=row.address,
            ssh_port=row.ssh_port,
            hardware=Hardware(cpus=row.cpus, memory_gib=row.memory_gib, gpus=row.gpus),
            user_ca=self.authority.user_ca_public,
            fleet_url=self.public_url,
            heartbeat_seconds=self.config.heartbeat_seconds,
            identity=identity,
        )

    def _identity(self, row: EnvironmentRow) -> tuple[Identity, str]:
        """A fresh host key, host certificate and agent token for this environment."""
        zone = self.config.zone
        principals = [f"{row.name}.{row.region}.{zone}", row.id, f"{row.name}.{zone}"]
        now = self.clock.now()
        if row.expires_at is not None:
            valid_for = max(row.expires_at - now, timedelta(0)) + timedelta(days=1)
        else:
            valid_for = timedelta(days=365)
        key, cert = self.authority.issue_host_identity(principals, now, valid_for)
        token = new_secret("lwa_")
        return Identity(row.owner, key, cert, token), digest(token)

    async def _set(self, env_id: str, *, expect: set[str] | None = None, **values: Any) -> bool:
        """Update one environment if it is still in one of `expect`; False if it moved on."""
        return await update_environment(self.store, self.clock, env_id, expect=expect, **values)

    async def _provision(
        self,
        env_id: str,
        identity: Identity | None = None,
        *,
        adopt: bool = False,
        placed: EnvironmentRow | None = None,
    ) -> None:
        """Start a placed environment's agent (or, with `adopt`, hand an agent that is already
        up the identity), then mark it running (warm for a pool container).

        `identity` is the one issued when it was placed; after a restart of the fleet it is
        gone (private keys are never stored), so a fresh one is issued."""
        await self.url_known.wait()
        started = self.clock.monotonic()
        row = placed
        if row is None:
            async with self.store.read() as session:
                row = await session.get(EnvironmentRow, env_id)
        if row is None or row.state != EnvironmentState.PROVISIONING:
            return
        provisioning = {EnvironmentState.PROVISIONING.value}
        if identity is None:
            identity, token_digest = self._identity(row)
            if not await self._set(
                env_id,
                expect=provisioning,
                status_message="certified again after a fleet restart; starting",
                agent_token_digest=token_digest,
            ):
                return
        try:
            spec = self._spec(row, identity)
            await (self.provider.assign(spec) if adopt else self.provider.start(spec))
        except ProviderError as exc:
            log.warning("environment %s failed to start: %s", env_id, exc)
            await self._fail(env_id, f"Its agent did not start: {exc}")
            return
        final = EnvironmentState.WARM if row.owner is None else EnvironmentState.RUNNING
        now = self.clock.now()
        if await self._set(
            env_id, expect=provisioning, state=final.value, status_message="ready", ready_at=now
        ):
            log.info(
                "environment %s is %s on %s after %.2f s",
                env_id,
                final.value,
                row.host,
                self.clock.monotonic() - started,
            )
        else:
            # Deleted while it was starting: the delete is waiting for us to finish.
            log.info("environment %s was deleted while starting", env_id)

    async def _assign(self, row: EnvironmentRow, identity: Identity) -> Environment:
        """Hand a claimed warm container to its tenant with the identity issued at the claim."""
        await self.url_known.wait()
        try:
            await self.provider.assign(self._spec(row, identity))
        except ProviderError as exc:
            await self._fail(row.id, f"The warm container could not be handed over: {exc}")
            raise Unavailable(
                "A warm container failed while being handed over; try again."
            ) from exc
        now = self.clock.now()
        await self._set(
            row.id,
            expect={EnvironmentState.PROVISIONING.value},
            state=EnvironmentState.RUNNING.value,
            status_message="ready",
            ready_at=now,
        )
        row.state, row.status_message, row.ready_at, row.updated_at = (
            EnvironmentState.RUNNING.value,
            "ready",
            now,
            now,
        )
        return to_resource(row, self.config.zone)

    async def _fail(self, env_id: str, reason: str) -> None:
        with contextlib.suppress(ProviderError):
            await self.provider.stop(env_id)
        await self._set(
            env_id,
            state=EnvironmentState.FAILED.value,
            status_message=reason,
            live_name=None,
            live_address=None,
            agent_token_digest=None,
        )

    # ------------------------------------------------------------------ delete, extend, expire

    async def delete(self, who: Principal, ref: str) -> Environment:
        async with self.store.write() as session:
            row = await self._find(session, who, ref)
            if row.state == EnvironmentState.DELETED:
                return to_resource(row, self.config.zone)
            if row.state == EnvironmentState.FAILED:
                # Nothing runs and nothing is held any more: deleting only takes it off lists.
                now = self.clock.now()
                row.state, row.deleted_at, row.updated_at = EnvironmentState.DELETED.value, now, now
                return to_resource(row, self.config.zone)
            row.state = EnvironmentState.DELETING.value
            row.status_message = "deleting"
            row.updated_at = self.clock.now()
        self._spawn(row.id, self._teardown(row.id, after=self._tasks.get(row.id)))
        return to_resource(row, self.config.zone)

    async def _teardown(self, env_id: str, after: asyncio.Task[None] | None = None) -> None:
        if after is not None:
            # Let a start in flight finish first, so that the stop below is the last word.
            await asyncio.gather(after, return_exceptions=True)
        try:
            await self.provider.stop(env_id)
        except ProviderError as exc:
            # It stays `deleting`, holding its capacity, until a sweep stops it for good.
            log.warning("stopping %s failed: %s", env_id, exc)
            await self._set(
                env_id,
                status_message=f"stopping it failed ({exc}); the fleet tries again every "
                f"{self.config.reaper_interval_seconds:g} s",
            )
            return
        now = self.clock.now()
        await self._set(
            env_id,
            state=EnvironmentState.DELETED.value,
            status_message="deleted",
            live_name=None,
            live_address=None,
            agent_token_digest=None,
            deleted_at=now,
        )

    async def extend(self, who: Principal, ref: str, hours: int) -> Environment:
        lt = self.config.lifetimes
        now = self.clock.now()
        async with self.store.write() as session:
            row = await self._find(session, who, ref)
            if row.state not in (EnvironmentState.RUNNING, EnvironmentState.MIGRATING):
                raise Conflict(
                    f"{row.name} is {row.state}; only a running environment can be extended."
                )
            if row.expires_at is None:
                raise Conflict(f"{row.name} is permanent: it has no expiry to extend.")
            limit = (
                lt.devserver_max_hours
                if row.kind == EnvironmentKind.DEVSERVER
                else lt.container_max_hours
            )
            new_expiry = max(row.expires_at, now) + timedelta(hours=hours)
            if new_expiry > now + timedelta(hours=limit):
                raise Invalid(
                    f"A {row.kind} can be extended to at most {limit} hours from now; "
                    "ask for fewer hours.",
                    field="hours",
                )
            row.expires_at = new_expiry
            row.updated_at = now
            return to_resource(row, self.config.zone)

    # ------------------------------------------------------------------ live migration

    async def migrate(self, who: Principal, ref: str, host: str | None = None) -> Environment:
        """Start moving a running environment live to another active host of its region
        (`host`, or the one with the most room). It is answered `migrating`, with `host` the new
        host and `migratingFrom` the old one; the move finishes in the background. Capacity is
        counted on the new host from the start."""
        now = self.clock.now()
        async with self.store.write() as session:
            row = await self._find(session, who, ref)
            if row.state != EnvironmentState.RUNNING:
                raise Conflict(f"{row.name} is {row.state}; only a running environment can move.")
            need = Hardware(cpus=row.cpus, memory_gib=row.memory_gib, gpus=row.gpus)
            others = [
                h
                for h in await host_usage(session, lock=True)
                if h.region == row.region and h.name != row.host
            ]
            if host is None:
                target = choose_host(others, need)
                if target is None:
                    raise NoCapacity(
                        f"No other active host in {row.region} has room for {row.name}; "
                        "free some, or add a host.",
                        field="host",
                    )
            else:
                target = next((h for h in others if h.name == host), None)
                if target is None:
                    names = ", ".join(h.name for h in others) or "none"
                    raise Invalid(
                        f"{host} is not another host of {row.region} (those are: {names}).",
                        field="host",
                    )
                if target.state is not HostState.ACTIVE:
                    raise Conflict(f"Host {host} is {target.state}; move {row.name} elsewhere.")
                if not need.fits_in(target.free):
                    raise NoCapacity(f"Host {host} has no room for {row.name}.", field="host")
            source = row.host
            row.migrating_from, row.host = source, target.name
            row.state = EnvironmentState.MIGRATING.value
            row.status_message = f"migrating from {source} to {target.name}"
            row.updated_at = now
        assert source is not None
        self._spawn(row.id, self._migrate(row.id, source, target.name))
        return to_resource(row, self.config.zone)

    async def _migrate(self, env_id: str, source: str, target: str) -> None:
        started = self.clock.monotonic()
        try:
            await self.provider.migrate(env_id, target, self.config.migration_blackout_seconds)
        except ProviderError as exc:
            log.warning("migrating %s to %s failed: %s", env_id, target, exc)
            await self._set(
                env_id,
                expect={EnvironmentState.MIGRATING.value},
                state=EnvironmentState.RUNNING.value,
                host=source,
                migrating_from=None,
                status_message=f"the move to {target} failed ({exc}); still on {source}",
            )
            return
        await self._set(
            env_id,
            expect={EnvironmentState.MIGRATING.value},
            state=EnvironmentState.RUNNING.value,
            migrating_from=None,
            status_message=f"migrated from {source}",
        )
        log.info(
            "environment %s migrated %s -> %s in %.2f s",
            env_id,
            source,
            target,
            self.clock.monotonic() - started,
        )

    async def set_host_state(self, name: str, state: HostState) -> None:
        async with self.store.write() as session:
            row = await session.get(HostRow, name)
            if row is None:
                raise NotFound(f"No host {name!r}: `leeward admin host list` shows them.")
            if row.state == HostState.DECOMMISSIONED:
                raise Conflict(f"Host {name} is decommissioned (not in the config any more).")
            row.state = state.value

    async def drain_host(self, name: str) -> None:
        """The drain coordinator's start: no new environments on `name`, and every one on it
        moved live to another active host of its region, then the host is in maintenance."""
        await self.set_host_state(name, HostState.DRAINING)
        self._spawn(f"drain:{name}", self._drain(name))

    async def _drain(self, name: str) -> None:
        admin = Principal(user="fleet drain coordinator", role=Role.ADMIN)
        deadline = self.clock.monotonic() + DRAIN_TIMEOUT_SECONDS
        stuck: dict[str, str] = {}
        while True:
            async with self.store.read() as session:
                host = await session.get(HostRow, name)
                if host is None or host.state != HostState.DRAINING:
                    log.info("drain of %s stopped: the host is %s", name, host and host.state)
                    return
                rows = (
                    await session.execute(
                        select(EnvironmentRow.id, EnvironmentRow.state).where(
                            EnvironmentRow.host == name, EnvironmentRow.state.in_(LIVE)
                        )
                    )
                ).all()
            movable = [env_id for env_id, state in rows if state == EnvironmentState.RUNNING]
            moving = [env_id for env_id in movable if env_id not in stuck]
            groups = (moving[i : i + DRAIN_PARALLEL] for i in range(0, len(moving), DRAIN_PARALLEL))
            for group in groups:
                for env_id in group:
                    try:
                        await self.migrate(admin, env_id)
                    except FleetError as exc:
                        stuck[env_id] = exc.message
                await asyncio.gather(
                    *(self._tasks[e] for e in group if e in self._tasks), return_exceptions=True
                )
            left = [env_id for env_id, _ in rows if env_id not in stuck]
            if not rows or (not moving and not left):
                break
            if self.clock.monotonic() > deadline:
                log.warning("drain of %s gave up after %.0f s", name, DRAIN_TIMEOUT_SECONDS)
                return
            if not moving:
                await self.clock.sleep(1.0)  # provisioning or deleting ones: let them settle
        if stuck:
            for env_id, why in stuck.items():
                log.warning("drain of %s: %s cannot move: %s", name, env_id, why)
            return  # stays draining: an operator must make room, then drain again
        await self.set_host_state(name, HostState.MAINTENANCE)
        log.info("host %s drained: in maintenance", name)

    async def sweep(self) -> None:
        """The periodic sweep: delete what expired, and retry deletions that failed."""
        await self.reap_expired()
        await self.retry_deletions()
        await self.events.prune(timedelta(hours=self.config.event_retention_hours))

    async def retry_deletions(self) -> list[str]:
        """Start the teardown again of every environment left `deleting` with nothing at work
        on it (its stop failed); returns their ids."""
        async with self.store.read() as session:
            ids = (
                (
                    await session.execute(
                        select(EnvironmentRow.id).where(
                            EnvironmentRow.state == EnvironmentState.DELETING.value
                        )
                    )
                )
                .scalars()
                .all()
            )
        stuck = [env_id for env_id in ids if env_id not in self._tasks]
        for env_id in stuck:
            self._spawn(env_id, self._teardown(env_id))
        return stuck

    async def reap_expired(self) -> list[str]:
        """Delete every environment whose expiry has passed; returns their ids."""
        now = self.clock.now()
        async with self.store.write() as session:
            rows = (
                (
                    await session.execute(
                        select(EnvironmentRow).where(
                            EnvironmentRow.expires_at <= now,
                            EnvironmentRow.state.in_(
                                [
                                    EnvironmentState.RUNNING.value,
                                    EnvironmentState.MIGRATING.value,
                                    EnvironmentState.PROVISIONING.value,
                                ]
                            ),
                        )
                    )
                )
                .scalars()
                .all()
            )
            for row in rows:
                row.state = EnvironmentState.DELETING.value
                row.status_message = "expired"
                row.updated_at = now
        for row in rows:
            log.info("environment %s (%s) expired", row.id, row.name)
            self._spawn(row.id, self._teardown(row.id, after=self._tasks.get(row.id)))
        return [r.id for r in rows]

    # ------------------------------------------------------------------ agents

    async def heartbeat(self, token: str, environment_id: str) -> bool:
        seen = (
            update(_ENV_TABLE)
            .where(
                _ENV_TABLE.c.id == environment_id,
                _ENV_TABLE.c.agent_token_digest == digest(token),
                _ENV_TABLE.c.state.in_(LIVE),
            )
            .values(last_seen_at=self.clock.now())
        )
        return await self.store.update_soon(seen) > 0

    async def agent_environment(self, token: str, environment_id: str) -> EnvironmentRow | None:
        """The live environment whose agent holds `token`; None for any other token."""
        async with self.store.read() as session:
            row = await session.get(EnvironmentRow, environment_id)
        if (
            row is None
            or row.agent_token_digest is None
            or not secrets.compare_digest(row.agent_token_digest, digest(token))
            or row.state not in LIVE
        ):
            return None
        return row

    async def agent_profile(self, row: EnvironmentRow) -> AgentProfile:
        """What `row`'s agent applies and watches: its owner's profile, the tracked paths and
        the setup steps."""
        store = self.config.profile_store
        if row.owner is None:
            return AgentProfile(
                owner=None,
                profile=None,
                tracked=[],
                setup=[],
                debounce_seconds=store.debounce_seconds,
            )
        profile = await self.profiles.profile(row.owner)
        user_config = profile.config
        tracked = list(
            dict.fromkeys([*store.tracked, *(user_config.tracked_paths if user_config else [])])
        )
        return AgentProfile(
            owner=row.owner,
            profile=profile,
            tracked=tracked,
            setup=setup_steps(self.config, EnvironmentKind(row.kind), user_config),
            debounce_seconds=store.debounce_seconds,
        )

    async def report(self, row: EnvironmentRow, report: AgentReport) -> None:
        """Store what an agent reports of its setup items and profile sync (an event)."""
        values: dict[str, Any] = {}
        if report.setup is not None:
            values["setup"] = _SETUP.dump_json(report.setup, by_alias=True).decode()
        if report.sync is not None:
            values["sync"] = report.sync.model_dump_json(by_alias=True)
        if values:
            await self._set(row.id, expect=set(LIVE), **values)

    # ------------------------------------------------------------------ recovery

    async def recover(self) -> None:
        """After a restart: finish what was in flight, restart agents that are gone."""
        async with self.store.read() as session:
            rows = (
                (
                    await session.execute(
                        select(EnvironmentRow).where(EnvironmentRow.state.in_(LIVE))
                    )
                )
                .scalars()
                .all()
            )
        up = await self.provider.running([r.id for r in rows])
        for row in rows:
            if row.state == EnvironmentState.DELETING:
                self._spawn(row.id, self._teardown(row.id))
            elif row.state == EnvironmentState.PROVISIONING:
                # Whether its agent started with the old identity or not, give it a new one:
                # the fleet cannot know what reached the agent before it stopped.
                self._spawn(row.id, self._provision(row.id, adopt=row.id in up))
            elif row.id not in up:
                log.warning("environment %s (%s) is not up; restarting its agent", row.id, row.name)
                self._spawn(row.id, self._restart(row.id))

    async def _restart(self, env_id: str) -> None:
        await self.url_known.wait()
        async with self.store.read() as session:
            row = await session.get(EnvironmentRow, env_id)
        if row is None or row.state not in (
            EnvironmentState.RUNNING,
            EnvironmentState.MIGRATING,
            EnvironmentState.WARM,
        ):
            return
        identity, token_digest = self._identity(row)
        await self._set(env_id, agent_token_digest=token_digest, status_message="restarting agent")
        try:
            await self.provider.start(self._spec(row, identity))
        except ProviderError as exc:
            await self._set(env_id, status_message=f"agent restart failed: {exc}")
            return
        await self._set(env_id, status_message="ready")

    # ------------------------------------------------------------------ background loops

    def start_loop(self, seconds: float, work: Callable[[], Awaitable[object]], name: str) -> None:
        """Run `work` every `seconds` until the fleet closes; a failure is logged, not fatal."""

        async def loop() -> None:
            while not self._closing:
                try:
                    await work()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s failed; trying again in %.0f s", name, seconds)
                await self.clock.sleep(seconds)

        task = asyncio.get_running_loop().create_task(loop(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _settled(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    """Forget a finished task; its failure was answered to its caller, or logged if none."""

    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled() and (failure := task.exception()) is not None:
            log.info("%s ended with %s", task.get_name(), failure)

    return done


def _sum(items: Any) -> Hardware:
    total = Hardware(cpus=0, memory_gib=0, gpus=0)
    for h in items:
        total = Hardware(
            cpus=total.cpus + h.cpus,
            memory_gib=total.memory_gib + h.memory_gib,
            gpus=total.gpus + h.gpus,
        )
    return total


__all__ = ["Fleet", "HostUsage", "Outcome", "to_resource"]
