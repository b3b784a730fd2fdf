"""Where `leeward proxy` can reach an environment's relay: one address given on the command line
(`Fixed`), or the client side's one way of finding an environment (`leeward.client.locate`:
the fleet API, the fleet's DNS and the last-known-good cache, raced), each address proven by
the relay handshake's first half before it is handed to the proxy (`Located`, which also wakes
an environment stopped for being idle)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from leeward.relay.frames import ProtocolError

if TYPE_CHECKING:
    from leeward.client.locate import Finder, Target


@dataclass(frozen=True)
class Candidate:
    address: str
    relay_port: int
    fqdn: str
    source: str
    """Where the address came from: "api" (the fleet), "dns", "cache", "command line"."""


class Locator(Protocol):
    async def candidates(self, name: str) -> list[Candidate]:
        """Where `name` may be reached now; raises `leeward.client.locate.LocateError` saying
        why when nowhere (with the impostor seen and the fleet's word, when there are)."""
        ...


@dataclass(frozen=True)
class Fixed:
    """One address given on the command line."""

    candidate: Candidate

    async def candidates(self, name: str) -> list[Candidate]:
        return [self.candidate]


class Located:
    """`leeward.client.locate.Finder`, the address it finds verified through the relay: the
    first address whose agent proves its host certificate (the relay handshake's first half,
    which opens nothing on the agent) wins, and is the one remembered in the Finder's cache. A
    rogue server at a cached or DNS address is refused, whatever it answers."""

    def __init__(
        self,
        fleet: str,
        token: str | None,
        state_dir: Path,
        known_hosts: Path,
        on_dns: Callable[[str], None] | None = None,
        on_impostor: Callable[[str], None] | None = None,
    ) -> None:
        from leeward.client.locate import AddressCache, Finder

        self.known_hosts = known_hosts
        self.finder: Finder = Finder(
            fleet,
            token,
            AddressCache(state_dir / "addresses.json", fleet),
            self._verify,
            on_impostor=on_impostor,
        )
        self.on_dns = on_dns
        self._dns_check: asyncio.Task[None] | None = None
        self._dns_name: str | None = None

    async def _verify(self, target: Target) -> None:
        from leeward.client.refusals import NotVerified
        from leeward.relay.handshake import HandshakeRefused, host_authorities, verify_host

        if target.relay_port is None:
            raise NotVerified(f"{target.address} has no relay port")
        async with asyncio.timeout(3.0):
            reader, writer = await asyncio.open_connection(target.address, target.relay_port)
            try:
                await verify_host(
                    reader,
                    writer,
                    fqdn=target.fqdn,
                    authorities=host_authorities(self.known_hosts, target.fqdn),
                )
            except HandshakeRefused as exc:
                raise NotVerified(str(exc), impostor=exc.reason == "rogue") from None
            except ProtocolError as exc:
                where = f"{target.address}:{target.relay_port}"
                raise NotVerified(
                    f"the host at {where} is not a Leeward relay ({exc}): a stale address, or "
                    "an impostor",
                    impostor=True,
                ) from None
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def wake(self, name: str, say: Callable[[str], None]) -> None:
        """Start `name`, stopped for being idle, and wait until it runs
        (`leeward.client.wake`; WakeError saying why when it does not)."""
        from leeward.client.wake import wake

        await wake(self.finder.fleet, self.finder.token, name, say)

    async def candidates(self, name: str) -> list[Candidate]:
        found = await self.finder.locate(name)
        # The race ends at the first verified address, usually before DNS could have failed:
        # ask it apart, so the status can say "DNS bypass" while it is down.
        self._dns_name = found.name
        self.recheck_dns()
        assert found.relay_port is not None
        return [Candidate(found.address, found.relay_port, found.fqdn, found.source)]

    def recheck_dns(self) -> None:
        """Ask the fleet's DNS for the environment last found (in the background; `on_dns`
        hears "ok" or "down"), unless a question is already out."""
        if self.on_dns is None or self._dns_name is None:
            return
        if self._dns_check is None or self._dns_check.done():
            self._dns_check = asyncio.ensure_future(self._check_dns(self._dns_name))

    async def _check_dns(self, name: str) -> None:
        from leeward.client.asking import dns_lookup

        info = self.finder.cache.fleet_info()
        server, zone = info.get("dns"), info.get("zone")
        if not server or not zone or self.on_dns is None:
            return
        try:
            answered = bool(await dns_lookup(server, f"{name}.{zone}"))
        except (OSError, TimeoutError):
            answered = False
        self.on_dns("ok" if answered else "down")
