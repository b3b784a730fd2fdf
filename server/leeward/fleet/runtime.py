"""The running fleet's wiring and the work it has in flight: `Fleet`.

`Fleet` holds what the rooms' operations need (config, store, provider, CA, clock, tokens,
profiles, the event log, the fleet's own URL) and the tasks they start: one per environment
at a time, the loops, and other background work, all cancelled and awaited when it closes.
The rules themselves live in the rooms (create, pools, provision, lifecycle, migration,
agents, recovery), as plain async functions.

Every state change is a short write transaction (creates that arrive together share one, and
so do small updates); the slow parts (starting an agent) happen between transactions, and a
restart picks them up where they were.

Several replicas may serve one PostgreSQL: an environment's work and each loop run under a
lease (leeward.fleet.leases), so that one replica at a time does them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from leeward.common.clock import Clock
from leeward.fleet.auth import TokenVerifier
from leeward.fleet.bell import Bell
from leeward.fleet.ca import CertificateAuthority
from leeward.fleet.config import FleetConfig
from leeward.fleet.events import EventLog
from leeward.fleet.leases import Leases
from leeward.fleet.profiles import ProfileStore
from leeward.fleet.store.db import Store
from leeward.providers.base import Provider
from leeward.providers.fabric import Fabric

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        self.bell = Bell()
        """Rung at each commit of this replica: long polls wait on it (leeward.fleet.inbox)."""
        store.committed.append(self.bell.ring)
        self.leases = Leases(store, clock, config.lease_seconds)
        self.public_url: str | None = config.public_url
        self.url_known = asyncio.Event()
        if self.public_url:
            self.url_known.set()
        self.observers: list[Callable[[str, float], None]] = []
        """Told of every allocation: its source ("warm" or "cold") and how long it took."""
        self.region_probes: dict[str, str] = {}
        """Region -> HOST:PORT of its gateway, which clients time to measure their RTT."""
        self.fabric: Fabric | None = None
        """The local fleet's network namespaces, when its network is made of them."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False

    def set_public_url(self, url: str) -> None:
        self.public_url = url.rstrip("/")
        self.url_known.set()

    @property
    def closing(self) -> bool:
        return self._closing

    async def close(self) -> None:
        self._closing = True
        with contextlib.suppress(ValueError):
            self.store.committed.remove(self.bell.ring)
        await self.events.close()
        tasks = list(self._tasks.values()) + list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------------ per-environment work

    def spawn(
        self,
        key: str,
        work: Awaitable[None],
        *,
        granted: str | None = None,
        takeover: bool = False,
    ) -> None:
        """Run per-environment work in the background, one task per environment at a time in
        this replica, and under its lease across replicas (`key` is an environment's id, or a
        name with a colon such as "drain:HOST").

        The work waits for the lease if another replica holds it (a delete here while a start
        there finishes). `granted`: the ticket of the lease granted in the transaction that
        made the environment. `takeover` (recovery): only if nobody holds it, this replica included;
        otherwise the work is dropped, since its holder is doing it."""
        lease = key if ":" in key else f"env:{key}"

        async def run() -> None:
            try:
                ticket = granted or await self._take(lease, takeover)
                if ticket is None:
                    if inspect.iscoroutine(work):
                        work.close()
                    return
                async with self.leases.holding(lease, ticket):
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

    async def _take(self, lease: str, takeover: bool) -> str | None:
        """Take `lease` (its ticket): at once for a takeover (None if anyone holds it), else
        as soon as its holder lets it go or it expires."""
        if takeover:
            return await self.leases.take(lease, if_mine=False)
        waited = False
        while (ticket := await self.leases.take(lease)) is None:
            if not waited:
                log.info("%s is another replica's for now; waiting for it", lease)
                waited = True
            await self.clock.sleep(min(1.0, self.leases.seconds / 3))
        return ticket

    def at_work(self, key: str) -> asyncio.Task[None] | None:
        """The task at work on `key` (an environment's id, or "drain:HOST"), if there is one."""
        return self._tasks.get(key)

    async def idle(self) -> None:
        """Wait until no per-environment work is in flight (tests and shutdown use it)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # ------------------------------------------------------------------ other background work

    def start_task(self, work: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run `work` in a task of its own until it ends or the fleet closes. Whoever awaits the
        task hears of its failure; if nobody does, it is logged."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._settled)
        return task

    def _settled(self, task: asyncio.Task[Any]) -> None:
        """Forget a finished task; its failure was answered to its caller, or logged if none."""
        self._background.discard(task)
        if not task.cancelled() and (failure := task.exception()) is not None:
            log.info("%s ended with %s", task.get_name(), failure)

    def start_loop(self, seconds: float, work: Callable[[], Awaitable[object]], name: str) -> None:
        """Run `work` every `seconds` until the fleet closes, in one replica at a time (under
        the loop's lease); a failure is logged, not fatal."""
        lease = f"loop:{name}"

        async def loop() -> None:
            while not self._closing:
                try:
                    if (ticket := await self.leases.take(lease)) is not None:
                        async with self.leases.holding(lease, ticket):
                            await work()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s failed; trying again in %.0f s", name, seconds)
                await self.clock.sleep(seconds)

        task = asyncio.get_running_loop().create_task(loop(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
