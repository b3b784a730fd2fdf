"""Finding an environment by racing the fleet API, the zone's DNS and the address cache, each
candidate checked by its SSH host certificate: a real fleet, real agents, real outages."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncssh
import pytest

from leeward.client.locate import AddressCache, Finder, host_certificate_verifier
from leeward.client.refusals import LocateError
from tests.conftest import free_port, run_ssh, small_config, ssh_access, until
from tests.fleet.test_dns import ask_async


@contextlib.asynccontextmanager
async def black_hole(host: str = "127.0.0.1") -> AsyncIterator[str]:
    """A TCP port that accepts and never answers: a fleet API that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, host, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def wait_for_fleet_info(cache: AddressCache, timeout: float = 10.0) -> dict[str, Any]:
    info: dict[str, Any] = await until(
        lambda: (found := cache.fleet_info()).get("dns") and found,
        "the catalog's zone and DNS cached",
        timeout=timeout,
    )
    return info


@pytest.fixture
async def world(start_fleet, tmp_path: Path, sqlite_url: str) -> AsyncIterator[Any]:
    """A fleet with one running devserver `box`, alice's ssh files and an empty cache."""
    config = small_config(tmp_path, sqlite_url)
    async with start_fleet(config) as f:
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "box"}
        )
        assert status in (201, 202), env
        env = await f.api.wait_state(env["id"], {"running"})
        paths = await ssh_access(f.api, tmp_path / "alice", "alice")
        cache = AddressCache(paths.state_dir / "addresses.json", f.url)
        verify = host_certificate_verifier(paths.known_hosts)

        def finder(url: str = f.url, **options: Any) -> Finder:
            return Finder(url, f.api.token, cache, verify, **options)

        yield SimpleNamespace(
            f=f, env=env, paths=paths, cache=cache, verify=verify, config=config, finder=finder
        )


async def test_each_source_alone_and_together(world: Any) -> None:
    env, cache = world.env, world.cache
    first = await world.finder().locate("box")
    assert (first.source, first.address, first.ssh_port) == ("api", env["address"], env["sshPort"])
    assert first.fqdn == env["fqdn"] and first.relay_port == env["relayPort"]
    info = await wait_for_fleet_info(cache)
    assert info["zone"] == "leeward.test"
    assert cache.environment("box")["address"] == env["address"]  # written on success

    # By its full name, everything up: any source may win; the address is the same.
    again = await world.finder().locate(env["fqdn"])
    assert again.address == env["address"]

    # DNS alone: the API hangs and the cache holds a dead address (the right name).
    cache.remember("box", dataclasses.replace(again, address="127.0.0.9"))
    async with black_hole() as hung:
        found = await world.finder(hung).locate("box")
    assert (found.source, found.address) == ("dns", env["address"])
    assert cache.environment("box")["address"] == env["address"]


async def test_dns_stopped_then_api_down_too(world: Any) -> None:
    f, env = world.f, world.env
    await world.finder().locate("box")
    await wait_for_fleet_info(world.cache)
    status, _ = await f.admin.call("POST", "/v1/admin/dns/stop")
    assert status == 200

    found = await world.finder().locate("box")  # the API or the cache
    assert found.source in ("api", "cache") and found.address == env["address"]

    # `ssh box` with the fleet's DNS down: the generated config needs no DNS.
    code, out, err = await run_ssh(world.paths, "box", "echo reached")
    assert (code, out.strip()) == (0, "reached"), err

    dead = f"http://127.0.0.1:{free_port()}"
    found = await world.finder(dead).locate("box")
    assert (found.source, found.address) == ("cache", env["address"])
    async with black_hole() as hung:
        found = await world.finder(hung).locate("box")
        assert (found.source, found.address) == ("cache", env["address"])
        assert found.seconds < 2.0  # nobody waited for the hung API


async def test_a_black_holed_dns_costs_the_race_nothing(world: Any) -> None:
    f, env = world.f, world.env
    await world.finder().locate("box")
    await wait_for_fleet_info(world.cache)

    async def timed(rounds: int = 5) -> float:
        best = []
        for _ in range(rounds):
            found = await world.finder(hung).locate("box")
            assert found.address == env["address"]
            best.append(found.seconds)
        return sorted(best)[len(best) // 2]

    async with black_hole() as hung:  # the API hangs too: only the cache and DNS can answer
        up = await timed()
        await f.admin.call("POST", "/v1/admin/dns/stop", {"blackHole": True})
        holed = await timed()
    # The benchmark (scripts/bench/locate) reports the figures; here only a generous bound.
    assert holed - up < 0.3, (up, holed)


@pytest.mark.parametrize("rogue_kind", ["plain key", "another CA's certificate"])
async def test_a_rogue_server_at_the_cached_address_is_refused_every_time(
    world: Any, rogue_kind: str
) -> None:
    f, env, cache = world.f, world.env, world.cache
    located = await world.finder().locate("box")
    await wait_for_fleet_info(cache)
    rogue_host = str(world.config.regions[0].network[-2])
    rogue_key = asyncssh.generate_private_key("ssh-ed25519")
    host_key: Any = rogue_key
    if rogue_kind != "plain key":  # signed, for the right name, by a CA the fleet is not
        other_ca = asyncssh.generate_private_key("ssh-ed25519")
        cert = other_ca.generate_host_certificate(rogue_key, "rogue", principals=[env["fqdn"]])
        host_key = (rogue_key, cert)
    rogue = await asyncssh.create_server(
        asyncssh.SSHServer, rogue_host, 0, server_host_keys=[host_key]
    )
    try:
        rogue_port = rogue.sockets[0].getsockname()[1]
        poisoned = dataclasses.replace(located, address=rogue_host, ssh_port=rogue_port)
        await f.admin.call("POST", "/v1/admin/dns/stop")
        dead = f"http://127.0.0.1:{free_port()}"
        for _ in range(3):
            cache.remember("box", poisoned)
            with pytest.raises(LocateError) as refused:
                await world.finder(dead).locate("box")
            message = str(refused.value)
            assert "not signed by the fleet's host CA" in message, message
            assert f"{rogue_host}:{rogue_port}" in message
            assert cache.environment("box")["address"] == rogue_host  # never "verified"
            # What the proxy needs to end the search: who answered, and no word from the fleet.
            assert refused.value.impostor == (
                f"the host at {rogue_host}:{rogue_port} is not signed by the fleet's host CA for "
                f"{env['fqdn']}: an impostor, or a stale address"
            )
            assert refused.value.fleet_state is None

        # The API hangs: the verdict waits for its timeout, the sentence does not.
        loop = asyncio.get_running_loop()
        told: list[tuple[float, str]] = []
        async with black_hole() as hung:
            cache.remember("box", poisoned)
            started = loop.time()
            finder = world.finder(
                hung, api_timeout=2.0, on_impostor=lambda s: told.append((loop.time(), s))
            )
            with pytest.raises(LocateError) as refused:
                await finder.locate("box")
        assert [s for _, s in told] == [refused.value.impostor], told
        assert told[0][0] - started < 1.0, "told long before the API's timeout"

        # With the fleet up, the rogue loses to the API's answer every time.
        for _ in range(3):
            cache.remember("box", poisoned)
            found = await world.finder().locate("box")
            assert (found.source, found.address) == ("api", env["address"])
    finally:
        rogue.close()
        await rogue.wait_closed()


async def test_an_unknown_name_is_the_apis_word(world: Any) -> None:
    with pytest.raises(LocateError, match="nope"):
        await world.finder().locate("nope")


async def test_dns_alone_finds_the_full_name_from_the_regions(world: Any, tmp_path: Path) -> None:
    """No cache entry for the environment, the API hung: DNS's `NAME.REGION.ZONE` answers give
    the name its host certificate must carry, so DNS alone leads to a verified connection."""
    env = world.env
    await world.finder().locate("box")
    info = await wait_for_fleet_info(world.cache)
    assert set(info["regions"]) == {r.name for r in world.config.regions}
    # A cache that knows the fleet (from connecting to other environments), not `box`.
    data = json.loads(world.cache.path.read_text())
    data["fleets"][world.f.url]["environments"] = {}
    (tmp_path / "fresh.json").write_text(json.dumps(data))
    fresh = AddressCache(tmp_path / "fresh.json", world.f.url)
    assert fresh.environment("box") is None and fresh.fleet_info()["sshPort"] == env["sshPort"]
    async with black_hole() as hung:
        found = await Finder(hung, world.f.api.token, fresh, world.verify).locate("box")
    assert (found.source, found.address, found.fqdn) == ("dns", env["address"], env["fqdn"])
    assert found.seconds < 1.0


async def test_while_it_migrates_dns_answers_and_locate_waits_out_the_blackout(
    start_fleet, tmp_path: Path, sqlite_url: str
) -> None:
    config = small_config(tmp_path, sqlite_url, migration_blackout_seconds=1.5)
    async with start_fleet(config) as f:
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "box"}
        )
        env = await f.api.wait_state(env["id"], {"running"})
        paths = await ssh_access(f.api, tmp_path / "alice", "alice")
        cache = AddressCache(paths.state_dir / "addresses.json", f.url)
        finder = Finder(f.url, f.api.token, cache, host_certificate_verifier(paths.known_hosts))
        await finder.locate("box")
        info = await wait_for_fleet_info(cache)

        status, moving = await f.admin.call("POST", "/v1/admin/environments/box/migrate")
        assert (status, moving["state"]) == (202, "migrating"), moving

        async def dark() -> bool:  # the blackout: the listener is closed
            try:
                _, writer = await asyncio.open_connection(env["address"], env["sshPort"])
            except (ConnectionRefusedError, ConnectionResetError):
                return True  # refused, or reset by the blackout's closing of every connection
            writer.close()
            return False

        await until(dark, "the blackout began", timeout=5)
        rcode, addresses, _ = await ask_async(info["dns"], f"box.{info['zone']}")
        assert (rcode, addresses) == ("NOERROR", [env["address"]])  # migrating: still named

        found = await finder.locate("box")  # the API says migrating: it tries again
        assert found.address == env["address"]
        assert found.seconds > 0.2, found  # it did wait for the network to come back
        assert found.notes[0].startswith("migrating: "), found.notes


class SteppingClock:
    """Time that passes only when slept: the migration wait, without waiting."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


async def test_the_migration_wait_is_timed_by_the_finders_clock(tmp_path: Path) -> None:
    """A fleet that says `migrating` for ever, at an address that never proves itself: the
    Finder gives up after its `migrating_wait` on its clock (30 s here, none of them real)."""
    from aiohttp import web

    from leeward.client.locate import MIGRATING_WAIT
    from leeward.client.refusals import NotVerified

    async def environment(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "state": "migrating",
                "address": "127.0.0.1",
                "sshPort": 1,
                "relayPort": 2,
                "fqdn": "box.north.leeward.test",
            }
        )

    app = web.Application()
    app.router.add_get("/v1/environments/{ref}", environment)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def dark(target: Any) -> None:
        raise NotVerified(f"{target.address}: connection refused")

    clock = SteppingClock()
    finder = Finder(url, "t", AddressCache(tmp_path / "a.json", url), dark, clock=clock)
    try:
        with pytest.raises(LocateError) as failed:
            await asyncio.wait_for(finder.locate("box"), timeout=20)
    finally:
        await runner.cleanup()
    assert failed.value.fleet_state == "migrating"
    assert f"has been migrating for {MIGRATING_WAIT:g} s" in str(failed.value)
    assert MIGRATING_WAIT < clock.t < MIGRATING_WAIT + 1
