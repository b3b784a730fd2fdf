"""Heartbeats to a (tiny, real) fleet, life without the fleet, and the control socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
import time
from pathlib import Path

from aiohttp import web

from leeward.agent import control
from leeward.agent.config import AgentConfig
from leeward.providers.local import LocalProvider
from leeward_protocol.fleet import AgentHeartbeat, HeartbeatAck
from tests.conftest import until

from .kit import Fleet, Kit


class FakeFleet:
    """Just the fleet's heartbeat endpoint, recording what agents send."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.beats: list[tuple[str, AgentHeartbeat]] = []
        self.arrived = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/agent/heartbeat", self.heartbeat)
        self.runner = web.AppRunner(app)

    async def heartbeat(self, request: web.Request) -> web.Response:
        body = AgentHeartbeat.model_validate(await request.json())  # strict: unknown fields fail
        self.beats.append((request.headers.get("Authorization", ""), body))
        self.arrived.set()
        return web.json_response(HeartbeatAck(interval_seconds=self.interval).wire())

    async def start(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while len(self.beats) < count:
            self.arrived.clear()
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(self.beats)} heartbeats arrived in {within} s"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)


async def test_heartbeats_carry_the_token_and_adopt_the_fleets_interval(
    fleet: Fleet, kit: Kit, provider: LocalProvider
) -> None:
    fake = FakeFleet(interval=0.1)
    fleet.fleet_url = await fake.start()
    try:
        # The config asks for a beat every 30 s; the fleet's answer says 0.1 s. Several beats
        # within a few seconds means the agent adopted the fleet's interval.
        spec = fleet.spec(owner="alice")
        await provider.start(spec)
        await fake.wait_for(4, within=5)
        for auth, beat in fake.beats:
            assert auth == f"Bearer {spec.identity.agent_token}"
            assert beat.environment_id == spec.id
            assert beat.agent_version
        assert fake.beats[0][1].sessions == 0

        # An open SSH connection is counted.
        alice = kit.ssh(spec, kit.user("alice"))
        session = await asyncio.create_subprocess_exec(
            *alice.argv("ssh", "box", "sleep 20"), stdin=asyncio.subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 10
            while not any(beat.sessions == 1 for _, beat in fake.beats):
                assert time.monotonic() < deadline, "no heartbeat counted the session"
                await fake.wait_for(len(fake.beats) + 1)
        finally:
            session.kill()
            await session.wait()

        # A new identity brings a new token, used at once.
        claimed = fleet.reassigned(spec, owner="bob")
        await provider.assign(claimed)
        seen = len(fake.beats)
        await fake.wait_for(seen + 2)
        assert fake.beats[-1][0] == f"Bearer {claimed.identity.agent_token}"

        # The fleet goes away: the agent goes on serving SSH and keeps trying.
        await fake.runner.cleanup()
        log = fleet.tmp / "envs" / spec.id / "agent.log"
        await until(
            lambda: "heartbeat failed" in log.read_text(),
            "the agent noticed the fleet was gone",
            timeout=10,
        )
        bob = kit.ssh(claimed, kit.user("bob"))
        done = await bob.run("ssh", "box", "echo still here")
        assert done.stdout == b"still here\n"
        assert await provider.running([spec.id]) == {spec.id}
    finally:
        await fake.runner.cleanup()


async def test_control_socket_status_errors_and_permissions(
    fleet: Fleet, provider: LocalProvider
) -> None:
    spec = fleet.spec(owner=None)
    await provider.start(spec)
    config = AgentConfig.load(fleet.tmp / "envs" / spec.id / "agent.json")
    sock = config.control_socket
    assert len(str(sock)) < 100
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((fleet.tmp / "envs" / spec.id / "agent.json").stat().st_mode) == 0o600

    status = await control.request(sock, {"op": "status"})
    assert status["ok"] is True
    assert status["environmentId"] == spec.id
    assert status["owner"] is None
    assert status["sessions"] == 0
    assert isinstance(status["pid"], int)

    answer = await control.request(sock, {"op": "dance"})
    assert answer["ok"] is False
    assert "unknown op" in str(answer["error"])

    reader, writer = await asyncio.open_unix_connection(str(sock))
    writer.write(b"not json\n")
    answer = json.loads(await reader.readline())
    assert answer["ok"] is False
    writer.close()
    await writer.wait_closed()

    # A config for another environment is refused, and the agent goes on as it was.
    other = config.model_copy(update={"environment_id": "e-someone-else"})
    other.write(Path(fleet.tmp / "envs" / spec.id / "agent.json"))
    answer = await control.request(sock, {"op": "reload"})
    assert answer["ok"] is False
    assert "e-someone-else" in str(answer["error"])
    assert (await control.request(sock, {"op": "status"}))["environmentId"] == spec.id
