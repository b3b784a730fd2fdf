"""Live migration and host drains with the real local provider: the environment's processes go
on, its network goes dark for the blackout (listener closed, connections reset), then it answers
on the new host at the same address; the API and the event stream show migrating, then running."""

from __future__ import annotations

import asyncio

from leeward.client import FleetClient
from leeward_protocol.fleet import EventType
from tests.conftest import run_ssh, small_config, ssh_access, wait_until


async def create(api, **extra) -> dict:
    status, env = await api.call(
        "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", **extra}
    )
    assert status in (201, 202), env
    return await api.wait_state(env["id"], {"running"})


async def hosts(admin) -> dict[str, dict]:
    status, body = await admin.call("GET", "/v1/admin/hosts")
    assert status == 200
    return {h["name"]: h for h in body["hosts"]}


async def test_one_environment_moves_live_and_says_so(start_fleet, sqlite_url, tmp_path):
    config = small_config(tmp_path, sqlite_url, regions=1, hosts=2)
    config.migration_blackout_seconds = 0.5
    async with start_fleet(config) as f:
        env = await create(f.api, region="north")
        paths = await ssh_access(f.api, tmp_path / "alice", "alice")
        code, out, _ = await run_ssh(paths, env["name"], "echo before")
        assert (code, out) == (0, "before\n")
        agent_pid = (config.provider.data_dir / env["id"] / "agent.pid").read_text()
        source = env["host"]
        target = next(h for h in await hosts(f.admin) if h != source)

        # A plain TCP connection open across the migration is reset by the blackout.
        reader, writer = await asyncio.open_connection(env["address"], env["sshPort"])
        assert (await reader.readline()).startswith(b"SSH-")

        events: list = []
        async with FleetClient(f.url, f.api.token) as fleet:

            async def follow() -> None:
                async for event in fleet.events():
                    events.append(event)

            follower = asyncio.get_running_loop().create_task(follow())
            await wait_until(lambda: asyncio.sleep(0, bool(events)), True, 10)

            status, moving = await f.admin.call(
                "POST", f"/v1/admin/environments/{env['id']}/migrate", {"host": target}
            )
            assert status == 202, moving
            assert moving["state"] == "migrating"
            assert moving["host"] == target and moving["migratingFrom"] == source
            assert moving["address"] == env["address"], "the address stays for its whole life"

            done = await f.api.wait_state(env["id"], {"running"})
            assert done["host"] == target and done["migratingFrom"] is None
            assert done["statusMessage"] == f"migrated from {source}"
            try:
                left = await asyncio.wait_for(reader.read(100), 10)
            except ConnectionResetError:
                left = b""
            assert left == b"", "a connection open through the blackout does not survive it"
            writer.close()

            states = await wait_until_states(events, env["id"], ["migrating", "running"])
            moved = [e.environment for e in events if e.type is EventType.ENVIRONMENT]
            mig = next(e for e in moved if e and e.state == "migrating")
            assert (mig.host, mig.migrating_from) == (target, source)
            assert states[-2:] == ["migrating", "running"]
            follower.cancel()

        usage = await hosts(f.admin)
        assert usage[target]["environments"] == 1 and usage[source]["environments"] == 0
        code, out, _ = await run_ssh(paths, env["name"], "echo after")
        assert (code, out) == (0, "after\n"), "it answers on the new host"
        pid_now = (config.provider.data_dir / env["id"] / "agent.pid").read_text()
        assert pid_now == agent_pid, "the environment's processes went on (a live migration)"
        await f.api.call("DELETE", f"/v1/environments/{env['id']}")


async def wait_until_states(events: list, env_id: str, tail: list[str]) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        states = [
            e.environment.state.value
            for e in events
            if e.environment is not None and e.environment.id == env_id
        ]
        if states[-len(tail) :] == tail:
            return states
        assert loop.time() < deadline, f"events for {env_id}: {states}"
        await asyncio.sleep(0.05)


async def test_a_drain_moves_everything_then_the_host_rests(start_fleet, sqlite_url, tmp_path):
    config = small_config(tmp_path, sqlite_url, regions=1, hosts=2)
    config.migration_blackout_seconds = 0.1
    async with start_fleet(config) as f:
        envs = [await create(f.api, region="north") for _ in range(3)]
        drained = envs[0]["host"]
        on_it = {e["id"] for e in envs if e["host"] == drained}
        assert on_it

        status, host = await f.admin.call("POST", f"/v1/admin/hosts/{drained}/drain")
        assert status == 202 and host["state"] == "draining"

        async def state() -> str:
            return (await hosts(f.admin))[drained]["state"]

        await wait_until(state, "maintenance", 30)
        for env in envs:
            status, now = await f.api.call("GET", f"/v1/environments/{env['id']}")
            assert now["state"] == "running" and now["host"] != drained
            if env["id"] in on_it:
                assert now["statusMessage"] == f"migrated from {drained}"
        assert (await hosts(f.admin))[drained]["environments"] == 0

        # Nothing new lands on a host in maintenance; activated, it takes work again.
        extra = await create(f.api, region="north")
        assert extra["host"] != drained
        status, host = await f.admin.call("POST", f"/v1/admin/hosts/{drained}/activate")
        assert status == 200 and host["state"] == "active"
        for env in [*envs, extra]:
            await f.api.call("DELETE", f"/v1/environments/{env['id']}")


async def test_migrations_that_cannot_be_done_say_why(start_fleet, sqlite_url, tmp_path):
    config = small_config(tmp_path, sqlite_url, regions=2, hosts=2, host_cpus=2)
    # tiny: 1 CPU, small: 2 CPU; each host has 2.
    async with start_fleet(config) as f:
        env = await create(f.api, region="north")
        path = f"/v1/admin/environments/{env['id']}/migrate"

        status, body = await f.api.call("POST", path, {})
        assert status == 403, "users cannot move environments"
        status, body = await f.admin.call("POST", path, {"host": "south-h1"})
        assert status == 422 and body["error"]["field"] == "host"
        assert "not another host of north" in body["error"]["message"]
        status, body = await f.admin.call("POST", path, {"host": env["host"]})
        assert status == 422
        status, body = await f.admin.call("POST", path, {"colour": "red"})
        assert status == 422 and "colour" in body["error"]["message"]
        status, body = await f.admin.call("POST", "/v1/admin/environments/nope/migrate")
        assert status == 404

        # A 2-CPU environment on each 2-CPU host of north: nowhere to go.
        full = await create(f.api, region="north", flavor="small")
        assert full["host"] != env["host"], "2 CPUs fit only on the empty host"
        status, body = await f.admin.call("POST", path, {})
        assert status == 409 and body["error"]["code"] == "no_capacity", body
        assert "room" in body["error"]["message"]
        status, now = await f.api.call("GET", f"/v1/environments/{env['id']}")
        assert now["state"] == "running" and now["host"] == env["host"], "a refusal moves nothing"
        fillers = [full]
        status, body = await f.admin.call("POST", "/v1/admin/hosts/nohost/drain")
        assert status == 404
        await f.api.call("DELETE", f"/v1/environments/{env['id']}")
        for x in fillers:
            await f.api.call("DELETE", f"/v1/environments/{x['id']}")
