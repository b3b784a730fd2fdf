"""Where `leeward proxy` can reach an environment's relay: the fleet API, then the last address
that led to a verified connection. A small interface, so address racing can replace it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol


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
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(entries, indent=1))
            os.replace(tmp, self.path)


class FleetThenCache:
    """Ask the fleet (`GET /v1/environments/NAME`); add the cached address when it differs or
    when the fleet cannot answer. Meant to give way to `leeward.locate.Finder` (which races
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
