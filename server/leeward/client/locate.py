"""Finding an environment: the fleet API, the zone's DNS and the last-known-good address cache,
raced; the first address whose SSH host certificate verifies wins.

The API is authoritative: when it answers with another address than a candidate still being
checked, that candidate is dropped; when it says there is no such environment, that is the
answer; while it says the environment is migrating, a failed check is tried again (the network
is dark only for the blackout). DNS gets a short budget (`DNS_TIMEOUT`) and no retries, so a DNS
outage costs a connection nothing when another source answers, and at most that budget when
none does. A verified address is written to the cache (atomically), so the next connection finds
it with the fleet and its DNS both down.

Light on purpose: it runs in `leeward proxy`, once per SSH connection. HTTP and DNS are spoken
over asyncio streams and datagrams (`leeward.client.asking`: no aiohttp, no pydantic); asyncssh
is imported only by the verifier that needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leeward.client.asking import DNS_TIMEOUT, dns_lookup, http_get_json
from leeward.client.refusals import LocateError, NotVerified
from leeward.common.clock import Clock, SystemClock

if TYPE_CHECKING:
    from leeward.client.paths import Paths

API_TIMEOUT = 5.0
MIGRATING_WAIT = 30.0
"""How long to keep trying an environment the API says is migrating (its blackout)."""

IMPOSTOR_TELL_AFTER = 0.25
"""How long an impostor's sentence waits for the API's answer before `Finder.on_impostor` is
told: an API that answers at once settles the verdict first, and the person reads one line
(the verdict), not two; a hung one leaves them this long without a word."""

FLEET_INFO_MAX_AGE = 600.0
"""The zone and DNS address are fetched from the catalog again after this many seconds."""


@dataclass(frozen=True)
class Target:
    """A candidate: where a source says the environment is."""

    address: str
    ssh_port: int
    relay_port: int | None
    fqdn: str
    source: str  # "api", "dns" or "cache"


@dataclass(frozen=True)
class Located:
    name: str
    fqdn: str
    address: str
    ssh_port: int
    relay_port: int | None
    source: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    """What the other sources did (failed, were slower, were refused), for `leeward locate`."""


Verify = Callable[[Target], Awaitable[None]]
"""Returns when `target` proves to be the environment (its host certificate, from the fleet's
host CA, names `target.fqdn`); raises NotVerified (or OSError) otherwise."""

OnImpostor = Callable[[str], None]
"""Told the sentence as soon as an impostor is found while the answer is still awaited."""


# -- the last-known-good cache ------------------------------------------------------------------


class AddressCache:
    """`addresses.json` in the state directory: per fleet URL, its zone and DNS address, and
    every environment's last verified address. Written atomically (temp file + rename)."""

    def __init__(self, path: Path, fleet: str) -> None:
        self.path = path
        self.fleet = fleet.rstrip("/")

    @classmethod
    def of(cls, paths: Paths, fleet: str) -> AddressCache:
        return cls(paths.state_dir / "addresses.json", fleet)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _mine(self, data: dict[str, Any]) -> dict[str, Any]:
        fleets = data.setdefault("fleets", {})
        mine = fleets.setdefault(self.fleet, {})
        mine.setdefault("environments", {})
        return mine  # type: ignore[no-any-return]

    def fleet_info(self) -> dict[str, Any]:
        return self._mine(self._load())

    def environment(self, name: str) -> dict[str, Any] | None:
        entry = self.fleet_info()["environments"].get(name)
        return entry if isinstance(entry, dict) else None

    def _update(self, change: Callable[[dict[str, Any]], None]) -> None:
        from leeward.common.files import write_private

        data = self._load()
        change(self._mine(data))
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def remember_fleet(self, zone: str, dns: str | None, regions: list[str] | None = None) -> None:
        def change(mine: dict[str, Any]) -> None:
            mine.update(zone=zone, dns=dns, checkedAt=time.time())
            if regions is not None:
                mine["regions"] = regions

        self._update(change)

    def remember(self, name: str, located: Located) -> None:
        def change(mine: dict[str, Any]) -> None:
            mine["environments"][name] = {
                "fqdn": located.fqdn,
                "address": located.address,
                "sshPort": located.ssh_port,
                "relayPort": located.relay_port,
                "verifiedAt": time.time(),
            }
            # DNS gives no port: the last one seen is the guess for a name not yet cached
            # (the local provider, like most fleets, runs every agent's SSH on one port).
            mine["sshPort"] = located.ssh_port

        self._update(change)


# -- the sources ----------------------------------------------------------------------------------


class _Gone(Exception):
    """The API says there is no such environment (authoritative)."""


@dataclass(frozen=True)
class _ApiAnswer:
    target: Target | None
    state: str


# -- the race -------------------------------------------------------------------------------------


@dataclass
class Finder:
    """What `locate` needs: the fleet (URL and token), the cache, and a verifier."""

    fleet: str
    token: str | None
    cache: AddressCache
    verify: Verify
    dns_timeout: float = DNS_TIMEOUT
    api_timeout: float = API_TIMEOUT
    migrating_wait: float = MIGRATING_WAIT
    clock: Clock = field(default_factory=SystemClock)
    """Times the migration wait (`migrating_wait`) and its pauses."""
    on_impostor: OnImpostor | None = None
    """Told when an impostor answered and the verdict will take a while (the API has not
    answered within `IMPOSTOR_TELL_AFTER`, or says the environment is migrating): `leeward
    proxy` says so on the stderr that ssh shows instead of keeping silent."""

    async def locate(self, name_or_fqdn: str) -> Located:
        """Race the sources; retry while the API says the environment is migrating."""
        started = self.clock.monotonic()
        tries, last = 0, ""
        while True:
            try:
                found = await self._race(name_or_fqdn, started)
            except _StillMigrating as exc:
                if exc.impostor is not None and self.on_impostor is not None:
                    self.on_impostor(exc.impostor)
                if self.clock.monotonic() - started > self.migrating_wait:
                    raise LocateError(
                        f"{name_or_fqdn} has been migrating for {self.migrating_wait:g} s and "
                        f"is still unreachable: {exc}",
                        impostor=exc.impostor,
                        fleet_state="migrating",
                    ) from None
                tries, last = tries + 1, str(exc)
                await self.clock.sleep(0.2)
                continue
            if tries:
                note = f"migrating: {tries} tries while its network was dark (last: {last})"
                found = dataclasses.replace(found, notes=[note, *found.notes])
            return found

    async def _race(self, name_or_fqdn: str, started: float) -> Located:
        loop = asyncio.get_running_loop()
        info = self.cache.fleet_info()
        zone = info.get("zone")
        name = name_or_fqdn.strip(".").lower()
        if zone and name.endswith("." + zone):
            name = name.split(".", 1)[0]
        cached = self.cache.environment(name)

        sources: dict[asyncio.Task[Any], str] = {
            asyncio.ensure_future(self._ask_api(name)): "api",
        }
        if info.get("dns") and zone:
            asked = self._ask_dns(info["dns"], name, zone, info.get("regions") or [])
            sources[asyncio.ensure_future(asked)] = "dns"
        if cached is not None:
            sources[asyncio.ensure_future(_from_cache(cached))] = "cache"
        if not zone or time.time() - float(info.get("checkedAt", 0)) > FLEET_INFO_MAX_AGE:
            refresh = asyncio.ensure_future(self._refresh_fleet_info())
        else:
            refresh = None

        checks: dict[asyncio.Task[None], Target] = {}
        notes: list[str] = []
        impostors: dict[str, str] = {}  # address: the sentence naming who answered there
        telling: asyncio.TimerHandle | None = None
        dns_found: list[tuple[str, str | None]] = []
        api: _ApiAnswer | None = None
        fqdn = cached.get("fqdn") if cached else None

        def check(target: Target) -> None:
            if api is not None and api.target is not None and target.address != api.target.address:
                notes.append(f"{target.source}: {target.address} is not where the fleet says")
                return
            if any(
                t.address == target.address and t.ssh_port == target.ssh_port
                for t in checks.values()
            ):
                return
            checks[asyncio.ensure_future(self.verify(target))] = target

        try:
            while sources or checks:
                done, _ = await asyncio.wait(
                    [*sources, *checks], return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task in checks:
                        target = checks.pop(task)
                        if task.exception() is None:
                            seconds = self.clock.monotonic() - started
                            located = Located(
                                name=name,
                                fqdn=target.fqdn,
                                address=target.address,
                                ssh_port=target.ssh_port,
                                relay_port=target.relay_port,
                                source=target.source,
                                seconds=seconds,
                                notes=notes,
                            )
                            with contextlib.suppress(OSError):
                                self.cache.remember(name, located)
                            return located
                        error = task.exception()
                        notes.append(f"{target.source}: {error}")
                        if isinstance(error, NotVerified) and error.impostor:
                            impostors.setdefault(target.address, str(error))
                            if "api" in sources.values() and telling is None and self.on_impostor:
                                # The API's answer may take seconds (API_TIMEOUT).
                                telling = loop.call_later(
                                    IMPOSTOR_TELL_AFTER, self.on_impostor, str(error)
                                )
                        continue
                    source = sources.pop(task)
                    error = task.exception()
                    if isinstance(error, _Gone):
                        raise LocateError(str(error), gone=True)
                    if error is not None:
                        notes.append(f"{source}: {_describe(error)}")
                    elif source == "api":
                        api = task.result()
                        assert api is not None
                        if api.target is None:
                            notes.append(f"api: {name} is {api.state}, with no address yet")
                            continue
                        fqdn = api.target.fqdn
                        for other, target in list(checks.items()):
                            if target.address != api.target.address:
                                other.cancel()
                                del checks[other]
                                notes.append(
                                    f"{target.source}: {target.address} dropped: the fleet says "
                                    f"{api.target.address}"
                                )
                        check(api.target)
                        for address, named in dns_found:
                            check(_dns_target(address, named or api.target.fqdn, cached, api))
                    elif source == "dns":
                        dns_found = task.result()
                        if not dns_found:
                            notes.append(f"dns: no address for {name}.{zone}")
                        for address, named in dns_found:
                            principal: str | None = named or fqdn
                            if principal:
                                port = info.get("sshPort")
                                check(_dns_target(address, principal, cached, api, port))
                            else:
                                notes.append(f"dns: {address}, and no full name to check it by")
                    else:
                        check(task.result())
        finally:
            if telling is not None:
                telling.cancel()
            for task in [*sources, *checks]:
                task.cancel()
            if refresh is not None:  # finishes in the background; a failure is no matter
                _background.add(refresh)
                refresh.add_done_callback(_settle)
        summary = "; ".join(notes) or "no source knew it"
        if api is not None and api.target is not None:
            impostor = impostors.get(api.target.address)  # elsewhere: stale, not the verdict
        else:
            impostor = next(iter(impostors.values()), None)
        if api is not None and api.state == "migrating":
            raise _StillMigrating(summary, impostor)
        raise LocateError(
            f"Cannot reach {name}: {summary}.",
            impostor=impostor,
            fleet_state=api.state if api is not None else None,
        )

    async def _ask_api(self, name: str) -> _ApiAnswer:
        from urllib.parse import quote

        status, body = await http_get_json(
            self.fleet, f"/v1/environments/{quote(name, safe='')}", self.token, self.api_timeout
        )
        if status == 404:
            message = body.get("error", {}).get("message") if isinstance(body, dict) else None
            raise _Gone(message or f"The fleet has no environment {name!r}: `leeward list`.")
        if status != 200 or not isinstance(body, dict):
            raise OSError(f"the fleet answered HTTP {status}")
        state = str(body.get("state"))
        address, port = body.get("address"), body.get("sshPort")
        if not address or not port or state not in ("running", "migrating", "provisioning"):
            return _ApiAnswer(None, state)
        target = Target(
            address=address,
            ssh_port=int(port),
            relay_port=body.get("relayPort"),
            fqdn=str(body["fqdn"]),
            source="api",
        )
        return _ApiAnswer(target, state)

    async def _ask_dns(
        self, server: str, name: str, zone: str, regions: list[str]
    ) -> list[tuple[str, str | None]]:
        """Addresses for `NAME.ZONE`, each with its full name when a `NAME.REGION.ZONE` query
        (one per known region, all at once) gave the same address: the host certificate's
        principal, so that DNS alone can lead to a verified connection."""
        names = [f"{name}.{zone}", *(f"{name}.{region}.{zone}" for region in regions)]
        answers = await asyncio.gather(
            *(dns_lookup(server, n, self.dns_timeout) for n in names), return_exceptions=True
        )
        if all(isinstance(a, BaseException) for a in answers):
            raise answers[0]  # type: ignore[misc]
        found: dict[str, str | None] = {}
        for queried, answer in zip(names[1:], answers[1:], strict=True):
            for address in answer if isinstance(answer, list) else []:
                found.setdefault(address, queried)
        bare = answers[0]
        for address in bare if isinstance(bare, list) else []:
            found.setdefault(address, None)
        return list(found.items())

    async def _refresh_fleet_info(self) -> None:
        status, body = await http_get_json(self.fleet, "/v1/catalog", self.token, self.api_timeout)
        if status == 200 and isinstance(body, dict) and body.get("zone"):
            regions = [str(r["name"]) for r in body.get("regions", []) if isinstance(r, dict)]
            self.cache.remember_fleet(str(body["zone"]), body.get("dns"), regions)


class _StillMigrating(Exception):
    def __init__(self, summary: str, impostor: str | None) -> None:
        super().__init__(summary)
        self.impostor = impostor


_background: set[asyncio.Task[Any]] = set()


def _settle(task: asyncio.Task[Any]) -> None:
    _background.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a failed refresh is retried next time


async def _from_cache(entry: dict[str, Any]) -> Target:
    return Target(
        address=str(entry["address"]),
        ssh_port=int(entry["sshPort"]),
        relay_port=entry.get("relayPort"),
        fqdn=str(entry["fqdn"]),
        source="cache",
    )


def _dns_target(
    address: str,
    fqdn: str,
    cached: dict[str, Any] | None,
    api: _ApiAnswer | None,
    default_port: int | None = None,
) -> Target:
    """DNS tells only the address: the ports come from the API's answer or the cache."""
    known = api.target if api is not None and api.target is not None else None
    if known is not None:
        ssh_port, relay_port = known.ssh_port, known.relay_port
    elif cached is not None:
        ssh_port, relay_port = int(cached["sshPort"]), cached.get("relayPort")
    else:
        ssh_port = default_port or 22
        relay_port = ssh_port + 1  # the fleet's convention: the relay is on the SSH port + 1
    return Target(address, ssh_port, relay_port, fqdn, "dns")


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer in time"
    if isinstance(error, ConnectionRefusedError):
        return "refused (nothing listens)"
    return str(error) or type(error).__name__


# -- verifying with SSH -----------------------------------------------------------------------


def host_certificate_verifier(known_hosts: Path, *, timeout: float = 5.0) -> Verify:
    """A verifier that runs an SSH key exchange with the candidate and accepts it only if its
    host certificate is signed by a CA in `known_hosts` (`@cert-authority *.ZONE ...`, as
    `leeward config-ssh` writes it) for the target's fully qualified name. It does not log in."""
    have_known_hosts = known_hosts.exists()

    async def verify(target: Target) -> None:
        import asyncssh

        if not have_known_hosts:
            raise NotVerified(
                f"no {known_hosts} to check host certificates with: run `leeward config-ssh`"
            )
        where = f"{target.address}:{target.ssh_port}"
        try:
            async with asyncio.timeout(timeout):
                conn = await asyncssh.connect(
                    target.address,
                    target.ssh_port,
                    known_hosts=str(known_hosts),
                    host_key_alias=target.fqdn,
                    username="leeward-locate",
                    client_keys=None,
                    agent_path=None,
                    password=None,
                    kbdint_auth=False,
                    gss_auth=False,
                    config=None,
                )
        except asyncssh.PermissionDenied:
            return  # the key exchange, and so the host certificate, passed; no login was asked
        except (asyncssh.HostKeyNotVerifiable, asyncssh.KeyExchangeFailed) as exc:
            if isinstance(exc, asyncssh.KeyExchangeFailed) and "host key" not in str(exc):
                raise NotVerified(f"{where}: {_describe(exc)}") from None
            # A server with no host certificate at all fails the key exchange (only
            # certificate algorithms are acceptable); one with another CA's fails the check.
            from leeward.common.sshcert import unsigned_host

            raise NotVerified(unsigned_host(where, target.fqdn), impostor=True) from None
        except TimeoutError:
            raise NotVerified(f"{where} did not finish an SSH handshake in {timeout:g} s") from None
        except (OSError, asyncssh.Error) as exc:
            raise NotVerified(f"{where}: {_describe(exc)}") from None
        conn.close()

    return verify
