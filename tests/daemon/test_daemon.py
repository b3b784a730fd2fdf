"""The real daemon against a real fleet and real agents: initialize, catalog, create with
`$/progress`, connect (then the real `ssh NAME`), health notifications, malformed input, the fleet
restarted under it (the event stream resumes: nothing lost, nothing repeated), delete, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from leeward.client.credentials import Credentials, store_credentials
from leeward.fleet.config import FleetConfig
from leeward.fleet.main import running_fleet
from leeward_protocol.fleet import Role
from tests.cli.sandbox import make_sandbox
from tests.conftest import free_port, make_user, small_config
from tests.daemon.kit import running_daemon


@contextlib.asynccontextmanager
async def fleet_up(config: FleetConfig) -> AsyncIterator[object]:
    async with running_fleet(config) as (_, fleet):
        yield fleet


def agent_pid(config: FleetConfig, env_id: str) -> int:
    assert config.provider.data_dir is not None
    return int((config.provider.data_dir / env_id / "agent.pid").read_text().split()[0])


async def test_the_daemon_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "user").mkdir()
    sandbox = make_sandbox(tmp_path / "user")
    config = small_config(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}")
    config.listen_port = free_port()
    config.provider.stop_agents_on_exit = False  # agents outlive the fleet, as VMs would
    url = f"http://127.0.0.1:{config.listen_port}"
    env_id = None
    try:
        async with contextlib.AsyncExitStack() as daemon_scope:
            first = contextlib.AsyncExitStack()
            daemon_scope.push_async_callback(first.aclose)
            fleet = await first.enter_async_context(fleet_up(config))
            token = await make_user(fleet, "alice")  # type: ignore[arg-type]
            await make_user(fleet, "root-admin", Role.ADMIN)  # type: ignore[arg-type]
            creds = sandbox.paths.credentials
            store_credentials(creds, Credentials(fleet=url, token=token))

            d = await daemon_scope.enter_async_context(
                running_daemon(sandbox, {"logLevel": "debug", "probeIntervalSeconds": 0.3})
            )
            if True:
                await d.until(
                    lambda: any(s["fleet"] == "connected" for s in d.statuses),
                    what="the daemon never reached the fleet",
                )
                status = await d.request("leeward/status/get", {})
                assert status["user"] == "alice" and status["fleet"] == "connected"
                assert status["resyncs"] == 1, "a first connection lists once"

                # -- catalog: regions nearest first, each with a measured RTT
                catalog = await d.request("leeward/catalog/get", {})
                assert {r["name"] for r in catalog["regions"]} == {"north", "south"}
                assert all(r["rttMs"] is not None and r["rttMs"] >= 0 for r in catalog["regions"])
                assert catalog["defaultRegion"] in {"north", "south"}
                labels = {(c["kind"], c["label"]) for c in catalog["lifespanChoices"]}
                assert ("devserver", "Permanent") in labels
                assert ("container", "36 hours") in labels
                assert [f["name"] for f in catalog["flavors"]] == ["tiny", "small", "gpu"]

                # -- create, with progress through every stage
                env = await d.request(
                    "leeward/environments/create",
                    {
                        "request": {"kind": "devserver", "flavor": "tiny", "region": "north"},
                        "workDoneToken": "create-1",
                    },
                )
                env_id = env["id"]
                assert env["state"] == "running" and env["region"] == "north"
                steps = d.progress["create-1"]
                assert steps[0]["kind"] == "begin" and steps[-1]["kind"] == "end"
                stages = [s["message"].split(":")[0] for s in steps if s["kind"] == "report"]
                assert stages == ["placing", "starting", "certifying", "ready"], stages

                healthy = await d.until(
                    lambda: (r := d.last_health(env_id)) and r["state"] == "healthy" and r,
                    what="no healthy record",
                )
                assert healthy["rttMs"] is not None and healthy["region"] == "north"
                assert healthy["host"] and healthy["name"] == env["name"]

                # A `leeward proxy` session resuming (its status file, watched): reconnecting.
                sessions = sandbox.paths.state_dir / "sessions"
                session = {"env": env["name"], "pid": os.getpid(), "state": "resuming"}
                sessions.mkdir(parents=True, exist_ok=True)
                (sessions / "1.json").write_text(json.dumps(session))
                # (The create's own `ssh NAME pwd` went through a real proxy, which wrote and
                # removed its file; wait for this one's state, not just a count.)
                resuming = await d.until(
                    lambda: (r := d.last_health(env_id)) and r["state"] == "reconnecting" and r,
                    what="the daemon did not see the proxy's session",
                )
                assert resuming["sessions"] == 1 and "relay" in resuming["reason"]
                (sessions / "1.json").unlink()
                await d.until(
                    lambda: (
                        (r := d.last_health(env_id))
                        and r["sessions"] == 0
                        and r["state"] == "healthy"
                    ),
                    what="the session's end did not show",
                )
                listing = await d.request("leeward/environments/list", {})
                assert [e["id"] for e in listing["environments"]] == [env_id]
                assert listing["stale"] is False

                # -- connect: certificate, ssh config, Include, probe; then plain `ssh NAME`
                connected = await d.request(
                    "leeward/environments/connect", {"environment": env["name"]}
                )
                name = env["name"]
                assert connected["hostAlias"] == name
                assert connected["remoteAuthority"] == f"ssh-remote+{name}"
                assert (
                    connected["remoteUri"]
                    == f"vscode-remote://ssh-remote+{name}" + (connected["remoteHome"])
                )
                assert connected["remoteHome"].startswith("/")
                user_config = Path(sandbox.env["HOME"]) / ".ssh" / "config"
                assert "Include" in user_config.read_text()
                ssh = subprocess.run(
                    # OpenSSH reads ~/.ssh/config from the passwd entry, not $HOME: name
                    # the sandbox's, to test the Include the daemon added there.
                    [
                        "ssh",
                        "-F",
                        str(user_config),
                        "-o",
                        "BatchMode=yes",
                        name,
                        "echo",
                        "hi",
                        name,
                    ],
                    env=sandbox.env,
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                assert ssh.returncode == 0, ssh.stderr
                assert ssh.stdout.strip() == f"hi {name}"
                known_hosts = sandbox.paths.known_hosts.read_text()
                assert "@cert-authority" in known_hosts

                # -- malformed params: a clear error naming the field, and the daemon goes on
                bad = await d.error_of(
                    "leeward/environments/create",
                    {"request": {"kind": "devserver", "flavor": 5}},
                )
                assert bad.code == -32602 and "request.flavor" in bad.message, bad.message
                bad = await d.error_of("leeward/environments/delete", {"environment": ""})
                assert bad.code == -32602 and "environment" in bad.message
                bad = await d.error_of("leeward/environments/extend", {"environment": name})
                assert "hours: required" in bad.message
                bad = await d.error_of("leeward/catalog/get", {"colour": "blue"})
                assert "colour: unknown field" in bad.message
                bad = await d.error_of("leeward/environments/delete", ["not", "an", "object"])
                assert bad.code == -32602
                bad = await d.error_of(
                    "leeward/environments/create",
                    {"request": {"kind": "spaceship", "flavor": "tiny"}},
                )
                assert "request.kind: must be 'devserver' or 'container'" in bad.message
                bad = await d.error_of(
                    "leeward/environments/create",
                    {"request": {"kind": "devserver", "flavor": "enormous"}},
                )
                assert bad.code == -32001 and "enormous" in bad.message
                bad = await d.error_of("leeward/environments/extend", {"environment": "nope"})
                assert bad.code == -32602
                # Bytes that are not JSON at all, straight onto the wire.
                body = b"{this is not json"
                writer = d.client.protocol.writer
                assert writer is not None
                writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                assert (await d.request("leeward/status/get", {}))["fleet"] == "connected"

                # -- the fleet goes away: stale list, degraded health, then it comes back
                before = await d.request("leeward/status/get", {})
            await first.aclose()
            # The fleet is down (its agents are not).
            await d.until(
                lambda: d.statuses[-1]["fleet"] == "unreachable",
                what="the daemon did not notice the fleet going away",
            )
            stale = await d.request("leeward/environments/list", {})
            assert stale["stale"] is True and stale["reason"]
            assert [e["id"] for e in stale["environments"]] == [env_id]
            degraded = await d.until(
                lambda: (r := d.last_health(env_id)) and r["state"] == "degraded" and r,
                what="health never said the fleet was unreachable",
            )
            assert degraded["fleetReachable"] is False and "fleet" in degraded["reason"]
            bad = await d.error_of("leeward/catalog/get", {})
            assert "Cannot reach the fleet" in bad.message

            async with fleet_up(config) as fleet:
                # Changes while the daemon has not reconnected yet (it backs off).
                other = await d.request(
                    "leeward/environments/create",
                    {"request": {"kind": "devserver", "flavor": "tiny", "region": "south"}},
                )
                # Without a token the daemon asked the client for one (for the refused create
                # above too, whose progress ended with the error).
                ours = [d.progress[t] for t in d.progress if t.startswith("leeward-create-")]
                assert [p[-1]["kind"] for p in ours] == ["end", "end"]
                assert "enormous" in ours[0][-1]["message"]
                assert ours[1][-1]["message"] == f"{other['name']} is ready"
                await d.until(lambda: d.statuses[-1]["fleet"] == "connected", timeout=30)
                events = await fleet.events.read_after(  # type: ignore[attr-defined]
                    before["lastEventId"], "alice"
                )
                status = await d.poll(
                    "leeward/status/get", lambda s: s["lastEventId"] == events[-1].id
                )
                assert status["resyncs"] == 1, "it resumed from its last id, no full relist"
                assert status["eventsReceived"] - before["eventsReceived"] == len(events)
                listing = await d.request("leeward/environments/list", {})
                assert listing["stale"] is False
                assert {e["id"] for e in listing["environments"]} == {env_id, other["id"]}
                await d.until(
                    lambda: (r := d.last_health(env_id)) and r["state"] == "healthy",
                    what="health did not recover with the fleet",
                )

                # -- the environment's agent dies: reconnecting, then unreachable
                os.kill(agent_pid(config, env_id), signal.SIGKILL)
                lost = await d.until(
                    lambda: (r := d.last_health(env_id)) and r["state"] == "unreachable" and r,
                    what="health never said unreachable",
                )
                states = [r["state"] for r in d.health if r["environmentId"] == env_id]
                assert "reconnecting" in states[states.index("healthy") :]
                assert name in lost["reason"]

                # -- delete both: gone from the list, a last health record says so
                for ref in (env_id, other["id"]):
                    gone = await d.request("leeward/environments/delete", {"environment": ref})
                    assert gone["state"] in ("deleting", "deleted")
                await d.until(
                    lambda: d.environments and d.environments[-1]["environments"] == [],
                    what="the list still has the deleted environments",
                )
                final = d.last_health(env_id)
                assert final is not None and final["environmentState"] == "deleted"
                env_id = None
                await fleet.idle()  # type: ignore[attr-defined]
            code = await d.stop()
            assert code == 0
            assert not [line for line in d.logs if "Traceback" in line]
    finally:
        if env_id is not None:
            with contextlib.suppress(Exception):
                os.kill(agent_pid(config, env_id), signal.SIGKILL)
        for pid_file in (config.provider.data_dir or tmp_path).glob("*/agent.pid"):
            with contextlib.suppress(Exception):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


async def test_signed_out_then_signing_in_from_the_editor(tmp_path: Path, start_fleet) -> None:
    (tmp_path / "user").mkdir()
    sandbox = make_sandbox(tmp_path / "user")
    config = small_config(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}")
    async with start_fleet(config) as f, running_daemon(sandbox, {}) as d:
        status = await d.request("leeward/status/get", {})
        assert status["fleet"] == "signedOut" and "leeward login" in status["reason"]
        bad = await d.error_of("leeward/environments/list", {})
        assert "Not signed in" in bad.message
        bad = await d.error_of("leeward/account/signIn", {"fleetUrl": f.url, "token": "nope"})
        assert "did not accept this token" in bad.message
        assert not sandbox.paths.credentials.exists(), "a refused token is not stored"
        bad = await d.error_of("leeward/account/signIn", {"fleetUrl": f.url})
        assert bad.code == -32602 and "token: required" in bad.message

        good = {"fleetUrl": f.url, "token": f.api.token}
        status = await d.request("leeward/account/signIn", good)
        assert status["user"] == "alice"
        assert sandbox.paths.credentials.stat().st_mode & 0o777 == 0o600
        assert sandbox.paths.certificate.exists(), "signing in certifies the SSH key"
        await d.poll("leeward/status/get", lambda s: s["fleet"] == "connected")
        listing = await d.request("leeward/environments/list", {})
        assert listing == {**listing, "environments": [], "stale": False}


async def test_signed_in_it_says_connecting_then_unreachable_never_signed_out(
    tmp_path: Path,
) -> None:
    """Right after initialize, the link to the fleet is still starting: a signed-in user is
    `connecting` (it said `signedOut`); a fleet that cannot be reached is `unreachable` (it said
    `signedOut` for good, the state it started in)."""
    (tmp_path / "user").mkdir()
    sandbox = make_sandbox(tmp_path / "user")
    held: list[asyncio.StreamWriter] = []
    black_hole = await asyncio.start_server(lambda _, w: held.append(w), "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    creds = sandbox.paths.credentials
    try:
        store_credentials(creds, Credentials(fleet=f"http://127.0.0.1:{port}", token="t"))
        async with running_daemon(sandbox, {}) as d:
            status = await d.request("leeward/status/get", {})
            assert status["fleet"] == "connecting", status
            assert status["reason"] == f"Connecting to the fleet at http://127.0.0.1:{port}."
            assert status["fleetUrl"] == f"http://127.0.0.1:{port}"
    finally:
        black_hole.close()
        for writer in held:
            writer.close()

    store_credentials(creds, Credentials(fleet=f"http://127.0.0.1:{free_port()}", token="t"))
    async with running_daemon(sandbox, {}) as d:
        status = await d.poll("leeward/status/get", lambda s: s["fleet"] != "connecting")
        assert status["fleet"] == "unreachable", status
        assert [s["fleet"] for s in d.statuses][:2] == ["connecting", "unreachable"]
