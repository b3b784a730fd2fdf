"""The fleet's side of host agents, through its real API: an admin issues a host its token
(kept hashed); a heartbeat with it registers the host; a host speaks for itself only; forged,
expired and replaced tokens are refused; a host not heard from is unreachable, nothing is placed
on it, and it is back at its next heartbeat."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from leeward.fleet import hostlink
from leeward.fleet.store.models import HostRow
from leeward_protocol.host import HostStatus
from tests.conftest import small_config, until

STATUS = HostStatus(url="http://127.0.0.1:9", isolation="test", isolates_owners=True).wire()


async def test_host_tokens_heartbeats_and_records(start_fleet, tmp_path, database_url, http):
    config = small_config(tmp_path, database_url, regions=1, hosts=2)
    config.provider.kind = "hosts"
    async with start_fleet(config, background=False) as f:

        async def beat(host: str, token: str | None) -> tuple[int, dict]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.post(
                f"{f.url}/v1/hosts/{host}/heartbeat", json=STATUS, headers=headers
            ) as response:
                return response.status, await response.json()

        hosts = {h["name"]: h for h in (await f.admin.call("GET", "/v1/admin/hosts"))[1]["hosts"]}
        assert {h["reachable"] for h in hosts.values()} == {False}, "not heard from yet"
        # Nothing can be placed on hosts no agent answers for.
        tiny = {"kind": "devserver", "flavor": "tiny"}
        status, body = await f.api.call("POST", "/v1/environments", tiny)
        assert status == 409 and "unreachable" in body["error"]["message"], body

        status, body = await f.api.call("POST", "/v1/admin/hosts/north-h1/token", {})
        assert status == 403, "users do not issue host tokens"
        status, one = await f.admin.call("POST", "/v1/admin/hosts/north-h1/token", {})
        assert status == 201, one
        assert one["token"].startswith("lwh_") and one["fleetKey"].startswith("ed25519:")
        assert one["fleetUrl"] == f.url
        _, two = await f.admin.call("POST", "/v1/admin/hosts/north-h2/token", {"hours": 1})
        async with f.fleet.store.read() as session:
            kept = [r.token_digest for r in (await session.execute(select(HostRow))).scalars()]
        assert one["token"] not in str(kept) and len(kept[0] or "") == 64, "kept hashed"

        assert (await beat("north-h1", None))[0] == 401
        code, refused = await beat("north-h1", "lwh_forged")
        assert code == 401 and "leeward admin host token" in refused["error"]["message"]
        code, refused = await beat("north-h2", one["token"])
        assert code == 403 and "north-h1's" in refused["error"]["message"], refused
        code, ack = await beat("north-h1", one["token"])
        assert (code, ack["intervalSeconds"]) == (200, config.heartbeat_seconds)
        assert (await beat("north-h2", two["token"]))[0] == 200

        hosts = {h["name"]: h for h in (await f.admin.call("GET", "/v1/admin/hosts"))[1]["hosts"]}
        assert hosts["north-h1"]["reachable"] is True and hosts["north-h1"]["lastSeen"]

        # Placed on a host heard from, whose API does not answer (nothing listens where it
        # said): the environment waits for its host, provisioning; it is not failed.
        status, waiting = await f.api.call("POST", "/v1/environments", tiny)
        assert status == 202, waiting

        async def waits() -> bool:
            _, now = await f.api.call("GET", f"/v1/environments/{waiting['id']}")
            assert now["state"] == "provisioning", now
            return "waiting for its host" in now["statusMessage"]

        await until(waits, "the start waiting for its host", timeout=30)

        # Records: a host reads its own, never another host's.
        async with http.get(
            f"{f.url}/v1/hosts/north-h1/environments",
            headers={"Authorization": f"Bearer {one['token']}"},
        ) as response:
            assert (response.status, await response.json()) == (200, {"environments": []})
        async with http.get(
            f"{f.url}/v1/hosts/north-h2/environments",
            headers={"Authorization": f"Bearer {one['token']}"},
        ) as response:
            assert response.status == 403

        # An expired token is refused and says what to do; a new token replaces the old one.
        async with f.fleet.store.write() as session:
            await session.execute(
                update(HostRow)
                .where(HostRow.name == "north-h2")
                .values(token_expires_at=f.fleet.clock.now() - timedelta(seconds=1))
            )
        code, refused = await beat("north-h2", two["token"])
        assert code == 401 and "expired" in refused["error"]["message"], refused
        _, again = await f.admin.call("POST", "/v1/admin/hosts/north-h1/token", {})
        assert (await beat("north-h1", one["token"]))[0] == 401, "the old token is replaced"
        assert (await beat("north-h1", again["token"]))[0] == 200

        # Not heard from for three heartbeats: unreachable; back at its next heartbeat.
        async with f.fleet.store.write() as session:
            await session.execute(
                update(HostRow)
                .where(HostRow.name == "north-h1")
                .values(last_seen_at=f.fleet.clock.now() - timedelta(seconds=60))
            )
        assert await hostlink.watch(f.fleet) == ["north-h1"]
        assert await hostlink.watch(f.fleet) == [], "said once"
        hosts = {h["name"]: h for h in (await f.admin.call("GET", "/v1/admin/hosts"))[1]["hosts"]}
        assert hosts["north-h1"]["reachable"] is False
        assert (await beat("north-h1", again["token"]))[0] == 200
        hosts = {h["name"]: h for h in (await f.admin.call("GET", "/v1/admin/hosts"))[1]["hosts"]}
        assert hosts["north-h1"]["reachable"] is True


async def test_an_in_process_fleet_has_no_reachability(start_fleet, tmp_path, sqlite_url):
    """provider.kind = "local": the fleet starts environments itself; hosts have no agent."""
    async with start_fleet(small_config(tmp_path, sqlite_url, regions=1), background=False) as f:
        _, body = await f.admin.call("GET", "/v1/admin/hosts")
        assert {h["reachable"] for h in body["hosts"]} == {None}
