"""Allocation under pressure: capacity, addresses, warm pools, expiry; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from leeward.common.clock import ManualClock
from leeward.fleet.lifecycle import reap_expired, retry_deletions, sweep
from leeward.fleet.placement import LIVE, host_usage
from leeward.fleet.store.models import EnvironmentRow
from leeward.providers.base import ProviderError
from leeward.providers.local import LocalProvider
from tests.conftest import until

TINY = {"kind": "devserver", "flavor": "tiny", "region": "north"}


async def test_concurrent_creates_never_exceed_capacity(start_fleet, config_factory, database_url):
    # One region, two hosts of 4 CPUs: room for exactly 8 tiny (1 CPU) devservers.
    config = config_factory(database_url, regions=1, hosts=2, host_cpus=4, host_memory_gib=64)
    async with start_fleet(config) as f:
        results = await asyncio.gather(
            *(f.api.call("POST", "/v1/environments", TINY) for _ in range(50))
        )
        statuses = Counter(status for status, _ in results)
        assert statuses == {202: 8, 409: 42}, statuses
        refused = [body for status, body in results if status == 409]
        assert all(b["error"]["code"] == "no_capacity" for b in refused)
        assert "Region north has no room" in refused[0]["error"]["message"]

        made = [body for status, body in results if status == 202]
        addresses = [b["address"] for b in made]
        assert len(set(addresses)) == 8
        assert all(ipaddress.ip_address(a) in config.regions[0].network for a in addresses)
        assert Counter(b["host"] for b in made) == {"north-h1": 4, "north-h2": 4}
        for body in made:
            await f.api.wait_state(body["id"], {"running"})

        async with f.fleet.store.read() as session:
            usage = await host_usage(session)
        for host in usage:
            assert host.used.cpus <= host.capacity.cpus
            assert host.used.cpus == 4

        # Delete frees capacity: one more fits afterwards, not two.
        await f.api.call("DELETE", f"/v1/environments/{made[0]['id']}")
        await f.fleet.idle()
        again = await asyncio.gather(
            *(f.api.call("POST", "/v1/environments", TINY) for _ in range(3))
        )
        assert sorted(s for s, _ in again) == [202, 409, 409]


async def test_no_capacity_names_the_regions_with_room(start_fleet, config_factory, sqlite_url):
    config = config_factory(sqlite_url, regions=2, hosts=1, host_cpus=16)
    async with start_fleet(config, background=False) as f:
        status, body = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "gpu", "region": "north"}
        )
        assert status == 202
        status, body = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "gpu", "region": "north"}
        )
        assert status == 409
        assert body["error"]["regionsWithRoom"] == ["south"]
        assert "south has room" in body["error"]["message"]
        # Without a region, the fleet picks the one with room.
        status, body = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "gpu"}
        )
        assert status == 202
        assert body["region"] == "south"
        status, body = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "gpu"}
        )
        assert status == 409
        assert "No region has room" in body["error"]["message"]


async def test_warm_pool_claims_are_immediate_and_the_pool_refills(
    start_fleet, config_factory, database_url
):
    config = config_factory(database_url, regions=1, warm_pool=2, pool_interval_seconds=0.2)
    async with start_fleet(config) as f:

        async def warm_count() -> int:
            async with f.fleet.store.read() as session:
                rows = await session.execute(
                    select(EnvironmentRow).where(EnvironmentRow.state == "warm")
                )
                return len(rows.scalars().all())

        await until(lambda: warm_count(), expected=2)
        status, body = await f.api.call(
            "POST", "/v1/environments", {"kind": "container", "profile": "web"}
        )
        assert status == 201, body
        assert body["state"] == "running"
        assert body["owner"] == "alice"
        assert body["name"].startswith("web-")
        assert "warm" not in body["name"]
        lifetime = datetime.fromisoformat(body["expiresAt"]) - datetime.fromisoformat(
            body["createdAt"]
        )
        assert lifetime == timedelta(hours=36)
        # Warm containers are nobody's: not listed, not reachable by id.
        listed = (await f.api.call("GET", "/v1/environments"))[1]["environments"]
        assert [e["id"] for e in listed] == [body["id"]]
        await until(lambda: warm_count(), expected=2)


async def test_expired_environments_are_reaped(start_fleet, config_factory, sqlite_url):
    clock = ManualClock(datetime.now(UTC))
    async with start_fleet(config_factory(sqlite_url), clock=clock, background=False) as f:
        status, short = await f.api.call(
            "POST", "/v1/environments", {"kind": "container", "profile": "web", "hours": 1}
        )
        assert status == 202
        status, long = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "hours": 5}
        )
        status, forever = await f.api.call(
            "POST",
            "/v1/environments",
            {"kind": "devserver", "flavor": "tiny", "lifespan": "permanent"},
        )
        for env in (short, long, forever):
            await f.api.wait_state(env["id"], {"running"})
        clock.advance(timedelta(minutes=59))
        assert await reap_expired(f.fleet) == []
        clock.advance(timedelta(minutes=2))
        assert await reap_expired(f.fleet) == [short["id"]]
        await f.fleet.idle()
        assert (await f.api.call("GET", f"/v1/environments/{short['id']}"))[1]["state"] == "deleted"
        clock.advance(timedelta(days=400))
        assert await reap_expired(f.fleet) == [long["id"]]
        await f.fleet.idle()
        assert (await f.api.call("GET", f"/v1/environments/{forever['id']}"))[1][
            "state"
        ] == "running"
        async with f.fleet.store.read() as session:
            live = (
                (
                    await session.execute(
                        select(EnvironmentRow).where(EnvironmentRow.state.in_(LIVE))
                    )
                )
                .scalars()
                .all()
            )
        assert [r.id for r in live] == [forever["id"]]


async def test_concurrent_requests_in_one_batch_keep_keys_and_names_unique(
    start_fleet, config_factory, database_url
):
    async with start_fleet(config_factory(database_url), background=False) as f:
        body = {"kind": "devserver", "flavor": "tiny"}
        same_key = await asyncio.gather(
            *(
                f.api.call("POST", "/v1/environments", body, headers={"Idempotency-Key": "k-1"})
                for _ in range(6)
            )
        )
        assert sorted(s for s, _ in same_key) == [200, 200, 200, 200, 200, 202]
        assert len({b["id"] for _, b in same_key}) == 1

        twins = await asyncio.gather(
            *(f.api.call("POST", "/v1/environments", {**body, "name": "twin"}) for _ in range(4))
        )
        assert sorted(s for s, _ in twins) == [202, 409, 409, 409]
        refused = [b for s, b in twins if s == 409]
        assert all(b["error"]["field"] == "name" for b in refused)
        listed = (await f.api.call("GET", "/v1/environments"))[1]["environments"]
        assert sorted(e["name"] for e in listed if e["name"] == "twin") == ["twin"]
        assert len(listed) == 2


async def test_addresses_stay_unique_when_the_range_wraps(start_fleet, config_factory, sqlite_url):
    config = config_factory(sqlite_url, regions=1, hosts=2)
    base = config.regions[0].network
    # Six usable addresses (a /29), so the counter wraps within this test.
    config.regions[0].network = ipaddress.IPv4Network(f"{base.network_address}/29")
    async with start_fleet(config) as f:

        async def create(n: int) -> list[dict]:
            made = await asyncio.gather(
                *(f.api.call("POST", "/v1/environments", TINY) for _ in range(n))
            )
            assert [s for s, _ in made] == [202] * n, made
            return [await f.api.wait_state(b["id"], {"running"}) for _, b in made]

        first = await create(5)
        for env in first[:3]:
            await f.api.call("DELETE", f"/v1/environments/{env['id']}")
        await f.fleet.idle()
        second = await create(3)  # wraps: .6 is fresh, then it reuses freed ones
        live = first[3:] + second
        addresses = [e["address"] for e in live]
        assert len(set(addresses)) == 5, addresses
        assert all(ipaddress.ip_address(a) in config.regions[0].network for a in addresses)
        # Two at once with one address left (and CPU to spare): one is placed, the other gets
        # a clear 409, and neither spoils the other.
        pair = await asyncio.gather(
            *(f.api.call("POST", "/v1/environments", TINY) for _ in range(2))
        )
        assert sorted(s for s, _ in pair) == [202, 409]
        placed = next(b for s, b in pair if s == 202)
        assert placed["address"] not in addresses
        refused = next(b for s, b in pair if s == 409)
        assert "no free address" in refused["error"]["message"]
        results = [await f.api.call("POST", "/v1/environments", TINY)]
        assert [s for s, _ in results] == [409]
        assert all("no free address" in b["error"]["message"] for _, b in results)


class StopFailsOnce:
    """The real local provider, except that its first stop fails (a host that does not
    answer, say): a fault at the provider boundary."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.failed = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def stop(self, environment_id: str) -> None:
        if not self.failed:
            self.failed = True
            raise ProviderError(f"environment {environment_id}: the host did not answer")
        await self.inner.stop(environment_id)


async def test_a_failed_stop_keeps_deleting_and_the_sweep_finishes_it(
    start_fleet, config_factory, sqlite_url
):
    config = config_factory(sqlite_url, regions=1)
    assert config.provider.data_dir is not None
    local = LocalProvider(config.provider.data_dir, stop_agents_on_exit=True)
    provider = StopFailsOnce(local)
    try:
        async with start_fleet(config, provider=provider, background=False) as f:
            status, env = await f.api.call("POST", "/v1/environments", TINY)
            assert status == 202
            await f.api.wait_state(env["id"], {"running"})
            await f.api.call("DELETE", f"/v1/environments/{env['id']}")
            await f.fleet.idle()
            stuck = (await f.api.call("GET", f"/v1/environments/{env['id']}"))[1]
            assert stuck["state"] == "deleting"
            assert "host did not answer" in stuck["statusMessage"]
            async with f.fleet.store.read() as session:
                held = sum(h.used.cpus for h in await host_usage(session))
            assert held == 1  # still holding its capacity while it may be running

            await sweep(f.fleet)
            await f.fleet.idle()
            gone = (await f.api.call("GET", f"/v1/environments/{env['id']}"))[1]
            assert gone["state"] == "deleted"
            assert not (config.provider.data_dir / env["id"]).exists()
            assert await retry_deletions(f.fleet) == []
    finally:
        await local.close()
