"""Where `leeward proxy` can reach an environment's relay: the fleet API, then the last address
that led to a verified connection. A small interface, so address racing can replace it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from leeward.common.files import write_atomic
from leeward.relay.frames import ProtocolError


@dataclass(frozen=True)
class Candidate:
    address: str
    relay_port: int
    fqdn: str
    source: str
    """Where the address came from: "api" (the fleet), "cache", "command line"."""
    migrating: bool = False


class Locator(Protocol):
    async def candidates(self, name: str) -> list[Candidate]: ...


class LookupError_(Exception):
    """No candidate at all; the message says why."""


@dataclass(frozen=True)
class Fixed:
    """One address given on the command line."""

    candidate: Candidate

    async def candidates(self, name: str) -> list[Candidate]:
        return [self.candidate]


class AddressCache:
    """Last known good addresses, one JSON file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, name: str) -> Candidate | None:
        try:
            entry = json.loads(self.path.read_text()).get(name)
            return Candidate(entry["address"], int(entry["relay_port"]), entry["fqdn"], "cache")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def remember(self, name: str, candidate: Candidate) -> None:
        try:
            entries = json.loads(self.path.read_text())
            if not isinstance(entries, dict):
                entries = {}
        except (OSError, ValueError):
            entries = {}
        entry = {
            k: v for k, v in asdict(candidate).items() if k in ("address", "relay_port", "fqdn")
        }
        entry["at"] = time.time()
        for key in {name, candidate.fqdn}:
            entries[key] = entry
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(entries, indent=1), durable=False)


class FleetThenCache:
    """Ask the fleet (`GET /v1/environments/NAME`); add the cached address when it differs or
    when the fleet cannot answer. Meant to give way to `leeward.client.locate.Finder` (which races
    the API, DNS and its own cache) once that is wired to verify through the relay."""

    def __init__(self, fleet: str | None, token: str | None, cache: AddressCache) -> None:
        self.fleet = fleet
        self.token = token
        self.cache = cache
        self.last_error = ""

    def _ask(self, name: str) -> Candidate | None:
        import urllib.parse  # here: 13 ms of start time the fleet-less paths do not pay
        import urllib.request

        if not self.fleet or not self.token:
            self.last_error = "not signed in"
            return None
        # ssh's %n may be the fully qualified name; the fleet knows names and ids.
        ref = name.split(".", 1)[0]
        url = f"{self.fleet.rstrip('/')}/v1/environments/{urllib.parse.quote(ref, safe='')}"
        if not url.startswith(("http://", "https://")):
            self.last_error = f"the fleet URL {self.fleet!r} is not http(s)"
            return None
        headers = {"Authorization": f"Bearer {self.token}"}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s), checked
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                body = json.loads(response.read())
        except Exception as exc:
            self.last_error = f"the fleet did not answer: {exc}"
            return None
        address, port, fqdn = body.get("address"), body.get("relayPort"), body.get("fqdn")
        if "." in name and fqdn != name.lower().rstrip("."):
            self.last_error = f"the fleet's {ref} is {fqdn}, not {name}"
            return None
        if not address or not port or not fqdn:
            self.last_error = f"the fleet has no address for {name} (state {body.get('state')})"
            return None
        return Candidate(address, int(port), fqdn, "api", body.get("state") == "migrating")

    async def candidates(self, name: str) -> list[Candidate]:
        fleet = await asyncio.to_thread(self._ask, name)
        cached = self.cache.read(name)
        found = [c for c in (fleet, cached) if c is not None]
        if (
            fleet is not None
            and cached is not None
            and (cached.address, cached.relay_port)
            == (
                fleet.address,
                fleet.relay_port,
            )
        ):
            found = [fleet]
        return found


class Raced:
    """`leeward.client.locate.Finder`: the fleet API, the fleet's DNS and the last-known-good cache
    raced; the first address whose agent proves its host certificate (the relay handshake's
    first half, which opens nothing on the agent) wins. A rogue server at a cached or DNS
    address is refused, whatever it answers."""

    def __init__(
        self,
        fleet: str,
        token: str | None,
        state_dir: Path,
        known_hosts: Path,
        on_dns: Callable[[str], None] | None = None,
    ) -> None:
        from leeward.client.locate import AddressCache as Cache
        from leeward.client.locate import Finder

        self.known_hosts = known_hosts
        self.finder = Finder(fleet, token, Cache(state_dir / "addresses.json", fleet), self._verify)
        self.on_dns = on_dns
        self._dns_check: asyncio.Task[None] | None = None

    async def _verify(self, target: object) -> None:
        from leeward.client.locate import NotVerified, Target
        from leeward.relay.handshake import HandshakeRefused, host_authorities, verify_host

        assert isinstance(target, Target)
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
                raise NotVerified(str(exc)) from None
            except ProtocolError as exc:
                raise NotVerified(f"not a Leeward relay: {exc}") from None
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def candidates(self, name: str) -> list[Candidate]:
        from leeward.client.locate import LocateError

        try:
            found = await self.finder.locate(name)
        except LocateError as exc:
            raise LookupError_(str(exc)) from None
        if self.on_dns is not None and (self._dns_check is None or self._dns_check.done()):
            # The race ends at the first verified address, usually before DNS could have
            # failed: ask it apart, so the status can say "DNS bypass" while it is down.
            self._dns_check = asyncio.ensure_future(self._check_dns(found.name))
        assert found.relay_port is not None
        return [Candidate(found.address, found.relay_port, found.fqdn, found.source)]

    async def _check_dns(self, name: str) -> None:
        from leeward.client.locate import dns_lookup

        info = self.finder.cache.fleet_info()
        server, zone = info.get("dns"), info.get("zone")
        if not server or not zone or self.on_dns is None:
            return
        try:
            answered = bool(await dns_lookup(server, f"{name}.{zone}"))
        except (OSError, TimeoutError):
            answered = False
        self.on_dns("ok" if answered else "down")
