"""The fleet with `provider.kind = "hosts"`: it reaches environments only through real host
agents (`leeward host serve`, each its own process, joined with its own token), over the host
API. Environments start, answer real `ssh`, move live between the two hosts and are deleted; a
host agent killed with `kill -9` takes nothing with it (its environments and sessions run on),
the fleet calls it unreachable within its heartbeat window and reachable again when it is back.
"""

from __future__ import annotations

import asyncio
import os
import signal

from leeward.common.processes import pid_alive
from tests.conftest import run_ssh, small_config, ssh_access, until
from tests.host.kit import HostAgent, hosts, join


async def test_environments_live_through_host_agents(start_fleet, tmp_path, sqlite_url):
    config = small_config(tmp_path, sqlite_url, regions=1, hosts=2)
    config.provider.kind = "hosts"
    assert config.provider.data_dir is not None
    agents = {name: HostAgent(tmp_path / "hosts" / name, name) for name in ("north-h1", "north-h2")}
    async with start_fleet(config) as f:
        try:
            await join(f.admin, f.url, agents, config.provider.data_dir)

            status, env = await f.api.call(
                "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "box"}
            )
            assert status == 202, env
            env = await f.api.wait_state(env["id"], {"running"})
            ssh = await ssh_access(f.api, tmp_path / "home", "alice")
            code, out, err = await run_ssh(ssh, "box", "echo $((6*7)) && echo $$ > ~/shell")
            assert (code, out.strip()) == (0, "42"), err
            agent_pid = int((config.provider.data_dir / env["id"] / "agent.pid").read_text())

            # A live migration through the target host's agent.
            other = "north-h2" if env["host"] == "north-h1" else "north-h1"
            status, moved = await f.admin.call(
                "POST", f"/v1/admin/environments/{env['id']}/migrate", {"host": other}
            )
            assert status == 202, moved
            moved = await f.api.wait_state(env["id"], {"running"})
            assert moved["host"] == other and moved["migratingFrom"] is None, moved
            code, out, err = await run_ssh(ssh, "box", "echo moved")
            assert (code, out.strip()) == (0, "moved"), err

            # kill -9 of the environment's host agent, with a session streaming through it.
            session = await asyncio.create_subprocess_exec(
                "ssh",
                "-F",
                str(ssh.ssh_config),
                "-o",
                "BatchMode=yes",
                "box",
                "for i in $(seq 1 40); do echo $i; sleep 0.1; done",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert session.stdout is not None
            assert (await session.stdout.readline()).strip() == b"1"
            victim = agents[other]
            assert victim.proc is not None
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
            out_rest, err = await session.communicate()
            lines = ["1", *out_rest.decode().split()]
            assert lines == [str(i) for i in range(1, 41)], (lines, err)
            assert session.returncode == 0, err
            assert pid_alive(agent_pid), "the environment's agent outlives its host agent"

            async def unreachable() -> bool:
                return (await hosts(f.admin))[other]["reachable"] is False

            # Three missed heartbeats, then the fleet's next look (one heartbeat period).
            window = 4 * config.heartbeat_seconds
            await until(unreachable, f"{other} marked unreachable", timeout=window + 5)
            # Nothing new goes to a host nobody answers for.
            status, second = await f.api.call(
                "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny"}
            )
            assert status == 202 and second["host"] != other, second
            await f.api.wait_state(second["id"], {"running"})
            status, _ = await f.api.call("DELETE", f"/v1/environments/{second['id']}")
            await f.api.wait_state(second["id"], {"deleted"})
            code, out, err = await run_ssh(ssh, "box", "cat ~/shell")
            assert code == 0, f"still reachable over ssh without its host agent: {err}"

            victim.start()

            async def back() -> bool:
                assert victim.proc is not None and victim.proc.poll() is None, victim.log()
                return (await hosts(f.admin))[other]["reachable"] is True

            await until(back, f"{other} back", timeout=30)
            assert pid_alive(agent_pid), "a host agent's restart adopts, not restarts"

            # The other host agent stops (stop_environments_on_exit): it powers off its own
            # environments, not this one, though both hosts share the machine's disk.
            bystander = agents[env["host"]]
            bystander.stop()
            assert bystander.proc is not None and bystander.proc.returncode == 0
            assert pid_alive(agent_pid), "another host's stop leaves this environment alone"

            # Deleted through the host agent that came back: its agent stops, its disk goes.
            status, _ = await f.api.call("DELETE", f"/v1/environments/{env['id']}")
            assert status == 202
            await f.api.wait_state(env["id"], {"deleted"})
            await until(lambda: not pid_alive(agent_pid), "the agent stopped", timeout=30)
            assert not (config.provider.data_dir / env["id"]).exists()
        finally:
            for agent in agents.values():
                agent.stop()
            for agent in agents.values():
                if agent.proc is not None and agent.proc.returncode not in (0, -9):
                    print(agent.name, agent.log())
    assert not [p for p in os.listdir(config.provider.data_dir) if p.startswith("e-")]
