"""The fleet backend's aiohttp application: `create_app(config)`.

One cleanup context per resource (aiohttp's pattern): the store (migrated at start, hosts synced
from the config), the SSH CA, the provider, and the fleet with its background loops (warm-pool
refill, the sweep of expired and stuck environments), the zone's DNS server, each cancelled and
awaited at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

from aiohttp import web
from sqlalchemy import select

from leeward.common.clock import Clock, SystemClock
from leeward.common.hostauth import CommandSigner
from leeward.fleet import expiry, hostlink, idle
from leeward.fleet.api import ROUTES
from leeward.fleet.api.routing import add_routes
from leeward.fleet.backups import scheduled
from leeward.fleet.ca import CertificateAuthority
from leeward.fleet.config import ConfigError, FleetConfig
from leeward.fleet.create import CreateQueue
from leeward.fleet.decommission import decommissions
from leeward.fleet.dns import dns_context
from leeward.fleet.errors import (
    FleetError,
    Internal,
    MethodNotAllowed,
    NotFound,
    TooLarge,
)
from leeward.fleet.hostapi import HostsProvider
from leeward.fleet.hostlink import load_command_key
from leeward.fleet.lifecycle import sweep
from leeward.fleet.metrics import Metrics
from leeward.fleet.network import ensure_fabric
from leeward.fleet.notify import delivery
from leeward.fleet.pools import refill_pools
from leeward.fleet.recovery import recover
from leeward.fleet.runtime import Fleet
from leeward.fleet.state import CREATES, FLEET, METRICS, STREAMS, OpenStreams
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import AuthorityRow, HostRow, RegionRow
from leeward.providers.base import Provider, ProviderError
from leeward_protocol.fleet import HostState

log = logging.getLogger(__name__)


def error_response(error: FleetError) -> web.Response:
    return web.json_response(
        error.body().model_dump(mode="json", by_alias=True, exclude_none=True),
        status=error.status or 500,
    )


@web.middleware
async def errors_and_metrics(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    started = time.perf_counter()
    route = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "unmatched"
    )
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except FleetError as exc:
        status = exc.status or 500
        return error_response(exc)
    except web.HTTPException as exc:
        status = exc.status
        if exc.status == 404:
            return error_response(NotFound(f"No such API route: {request.method} {request.path}."))
        if exc.status == 405:
            allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ())))
            response = error_response(
                MethodNotAllowed(
                    f"{request.method} is not allowed on {request.path}; it takes {allowed}."
                )
            )
            response.headers["Allow"] = allowed  # RFC 9110: a 405 says what is allowed
            return response
        if exc.status == 413:
            limit = request.app[FLEET].config.max_body_bytes
            return error_response(TooLarge(f"The body is too large; the limit is {limit} bytes."))
        raise
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return error_response(
            Internal("The fleet failed to answer; it has been logged. Try again.")
        )
    finally:
        metrics = request.app[METRICS]
        metrics.requests.labels(request.method, route, str(status)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)


async def sync_topology(store: Store, config: FleetConfig, *, hosted: bool = False) -> None:
    """Make the store's regions and hosts match the config. Host state is operational and is
    kept; a host that left the config is decommissioned (its environments stay listed). With
    host agents (`hosted`), a host is unreachable until its agent is heard from; without, the
    fleet starts environments itself and reachability does not apply."""
    async with store.write() as session:
        for region in config.regions:
            row = await session.get(RegionRow, region.name)
            if row is None:
                session.add(
                    RegionRow(name=region.name, network=str(region.network), next_address=0)
                )
            elif row.network != str(region.network):
                row.network = str(region.network)
                row.next_address = 0
            for host in region.hosts:
                existing: HostRow | None = await session.get(HostRow, host.name)
                if existing is None:
                    session.add(
                        HostRow(
                            name=host.name,
                            region=region.name,
                            state=HostState.ACTIVE.value,
                            cpus=host.cpus,
                            memory_gib=host.memory_gib,
                            gpus=host.gpus,
                        )
                    )
                else:
                    existing.region = region.name
                    existing.cpus, existing.memory_gib, existing.gpus = (
                        host.cpus,
                        host.memory_gib,
                        host.gpus,
                    )
                    if existing.state == HostState.DECOMMISSIONED:
                        existing.state = HostState.ACTIVE.value
        configured = {h.name for r in config.regions for h in r.hosts}
        for host_row in (await session.execute(select(HostRow))).scalars():
            if host_row.name not in configured:
                host_row.state = HostState.DECOMMISSIONED.value
            if not hosted:
                host_row.reachable = None
            elif host_row.reachable is None:
                host_row.reachable = False


async def load_authority(store: Store, now: datetime) -> CertificateAuthority:
    """The SSH CA kept in the store, made on first start; replicas share it."""
    async with store.write() as session:
        row = await session.get(AuthorityRow, 1)
        if row is None:
            authority = CertificateAuthority.generate()
            session.add(
                AuthorityRow(
                    id=1,
                    host_ca_key=authority.host_ca_private,
                    user_ca_key=authority.user_ca_private,
                    created_at=now,
                )
            )
            return authority
        return CertificateAuthority.from_private_keys(row.host_ca_key, row.user_ca_key)


async def stop_streams(app: web.Application) -> None:
    """Event streams and agents' waits never end by themselves: end them, so that shutdown
    does not wait."""
    for stream in list(app[STREAMS].open):
        stream.stop_streaming()
    if FLEET in app:
        app[FLEET].profiles.close()  # agents' held waits for profile changes answer now


@contextlib.asynccontextmanager
async def region_gateways(config: FleetConfig) -> AsyncIterator[dict[str, str]]:
    """The local provider's region gateways: a TCP listener on the last address of each
    region's network (never given to an environment), which accepts and closes at once, so a
    client can time a connect to it as its round trip to the region. Yields region -> probe."""

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    servers: list[asyncio.Server] = []
    probes: dict[str, str] = {}
    try:
        for region in config.regions:
            address = str(region.network[-1])
            try:
                server = await asyncio.start_server(answer, address, config.provider.ssh_port)
            except OSError as exc:
                log.warning("region %s: no gateway at %s (%s)", region.name, address, exc)
                continue
            servers.append(server)
            probes[region.name] = f"{address}:{config.provider.ssh_port}"
        yield probes
    finally:
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()


def create_app(
    config: FleetConfig,
    *,
    provider: Provider | None = None,
    clock: Clock | None = None,
    background: bool = True,
) -> web.Application:
    """The fleet's application. `provider` defaults to the configured one (the local provider);
    `background=False` leaves out the pool and expiry loops, for tests that drive them."""
    app = web.Application(middlewares=[errors_and_metrics], client_max_size=config.max_body_bytes)
    app[METRICS] = Metrics()
    add_routes(app, ROUTES)
    clock = clock or SystemClock()

    async def fleet_context(app: web.Application) -> AsyncIterator[None]:
        assert config.database is not None, "load_config() fills in the database"
        store = Store(config.database)
        chosen = provider
        fleet: Fleet | None = None
        stack = contextlib.AsyncExitStack()
        try:
            fabric = await ensure_fabric(config) if config.network.kind == "namespaces" else None
            await store.migrate()
            hosted = provider is None and config.provider.kind == "hosts"
            await sync_topology(store, config, hosted=hosted)
            authority = await load_authority(store, clock.now())
            if hosted:
                signer = CommandSigner(await load_command_key(store))
                hosts = HostsProvider(store, signer, clock)
                await hosts.refresh()
                chosen = hosts
            if chosen is None:
                from leeward.providers.local import LocalProvider

                assert config.provider.data_dir is not None
                try:
                    chosen = LocalProvider(
                        config.provider.data_dir,
                        stop_agents_on_exit=config.provider.stop_agents_on_exit,
                        sandboxes=config.provider.sandboxes,
                        image_cache=config.provider.image_cache,
                    )
                except ProviderError as exc:  # sandboxes = "on" where there can be none
                    raise ConfigError(
                        f'{exc}. Fix that, or set `sandboxes` under [provider] to "auto" '
                        "(one user only without sandboxes: docs/operator.md)."
                    ) from None
            fleet = Fleet(config, store, chosen, authority, clock)
            fleet.fabric = fabric
            if hosted:
                fleet.start_task(hosts.keep_fresh(config.heartbeat_seconds), "host directory")
            fleet.observers.append(app[METRICS].observe_allocation)
            app[FLEET] = fleet
            app[CREATES] = CreateQueue(fleet)
            fleet.events.start()
            if provider is None:
                fleet.region_probes = await stack.enter_async_context(region_gateways(config))
            await recover(fleet, at_start=True)
            if background:
                fleet.start_loop(
                    config.lease_seconds / 2,
                    functools.partial(recover, fleet),
                    "recovery of work no replica holds",
                )
                fleet.start_loop(
                    config.pool_interval_seconds,
                    functools.partial(refill_pools, fleet),
                    "warm-pool refill",
                )
                fleet.start_loop(
                    config.reaper_interval_seconds,
                    functools.partial(sweep, fleet),
                    "expiry and deletion sweep",
                )
                fleet.start_loop(
                    config.backup.check_seconds,
                    functools.partial(scheduled, fleet),
                    "backup schedule",
                )
                fleet.start_loop(
                    config.backup.check_seconds,
                    functools.partial(decommissions, fleet),
                    "decommissions",
                )
                fleet.start_loop(
                    config.notify.check_seconds,
                    functools.partial(expiry.warn, fleet),
                    "expiry warnings",
                )
                fleet.start_loop(
                    config.notify.check_seconds,
                    functools.partial(idle.idle_round, fleet),
                    "idle stop and dormancy",
                )
                delivery.start(fleet, config)
                if hosted:
                    fleet.start_loop(
                        config.heartbeat_seconds,
                        functools.partial(hostlink.watch, fleet),
                        "host reachability",
                    )
            yield
        finally:
            if fleet is not None:
                await fleet.close()
            if chosen is not None and provider is None:
                await chosen.close()
            await stack.aclose()
            await store.close()

    app.cleanup_ctx.append(fleet_context)
    app.cleanup_ctx.append(dns_context)
    app[STREAMS] = OpenStreams()
    app.on_shutdown.append(stop_streams)
    return app
