"""The real OpenSSH client through `leeward proxy` against a real agent: the SSH session rides
through blackouts (listeners closed, every TCP connection reset) without noticing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

from leeward.agent import control
from leeward.agent.config import AgentConfig
from leeward.common.processes import pid_alive
from leeward.providers.base import EnvironmentSpec
from leeward.providers.local import LocalProvider
from tests.agent.kit import SSH, Fleet, Kit
from tests.conftest import until

from .conftest import LEEWARD


@pytest.fixture
async def env(fleet: Fleet, provider: LocalProvider) -> EnvironmentSpec:
    spec = fleet.spec(owner="alice")
    await provider.start(spec)
    return spec


def control_socket(tmp_path: Path, spec: EnvironmentSpec) -> Path:
    return AgentConfig.load(tmp_path / "envs" / spec.id / "agent.json").control_socket


def through_proxy(kit: Kit, spec: EnvironmentSpec, *extra: str) -> SSH:
    """Kit's ssh config (host CA, HostKeyAlias, the user's certificate) plus the ProxyCommand."""
    ssh = kit.ssh(spec, kit.user("alice"))
    proxy = " ".join(
        [
            LEEWARD,
            "proxy",
            "%n",
            f"--address {spec.address}",
            f"--port {spec.relay_port}",
            f"--fqdn {spec.fqdn}",
            f"--known-hosts {kit.known_hosts}",
            "--no-status",
            *extra,
        ]
    )
    text = ssh.config.read_text().replace("Host box\n", f"Host box\n  ProxyCommand {proxy}\n")
    ssh.config.write_text(text.replace("  ConnectTimeout 5\n", "  ConnectTimeout 20\n"))
    return ssh


async def relinked(sock: Path) -> None:
    """Until the proxy has its link again (it backs off while the address is dark)."""

    async def linked() -> bool:
        return bool((await control.request(sock, {"op": "status"}))["relayLinks"] == 1)

    await until(linked, "the proxy linked again", timeout=20)


async def blackout(sock: Path, seconds: float) -> int:
    """The agent's network goes dark for `seconds`; how many relay links it reset."""
    async with asyncio.timeout(20):
        answer = await control.request(sock, {"op": "blackout", "seconds": seconds})
    assert answer["ok"] is True, answer
    links = answer["resetRelayLinks"]
    assert isinstance(links, int)
    return links


async def stream_with_blackouts(
    ssh: SSH, sock: Path, size: int, blackouts: int, tmp_path: Path
) -> None:
    rng = random.Random()
    proc = await asyncio.create_subprocess_exec(
        *ssh.argv("ssh", "box", "echo pid $$; sha256sum; echo pid $$"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not first.startswith(b"pid "):
        proc.stdin.close()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        raise AssertionError(f"ssh did not start: {first!r} {err.decode()}")
    digest = hashlib.sha256()
    moments = sorted(rng.randrange(size) for _ in range(blackouts))
    sent = 0
    pending: list[asyncio.Task[int]] = []
    resets = 0
    while sent < size:
        chunk = rng.randbytes(min(256 * 1024, size - sent))
        proc.stdin.write(chunk)
        await asyncio.wait_for(proc.stdin.drain(), 60)
        digest.update(chunk)
        sent += len(chunk)
        while moments and moments[0] <= sent:
            moments.pop(0)
            # One blackout at a time, at a random moment, while the stream keeps flowing.
            if pending:
                resets += await pending.pop()
                await relinked(sock)
            pending.append(asyncio.create_task(blackout(sock, rng.uniform(0.05, 0.4))))
        assert proc.returncode is None, "ssh exited during the stream"
    for task in pending:
        resets += await task
    proc.stdin.close()
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().split("\n")
    assert lines[0].split()[0] == digest.hexdigest(), (lines, err)
    assert lines[1] == first.decode().strip(), "the remote shell changed"
    assert resets == blackouts, f"only {resets} of {blackouts} blackouts hit the relay link"


async def test_openssh_through_the_proxy_survives_blackouts(
    kit: Kit, env: EnvironmentSpec, tmp_path: Path
) -> None:
    ssh = through_proxy(kit, env)
    await stream_with_blackouts(ssh, control_socket(tmp_path, env), 8 << 20, 5, tmp_path)


@pytest.mark.slow
async def test_openssh_through_the_proxy_streams_50_mib_through_many_blackouts(
    kit: Kit, env: EnvironmentSpec, tmp_path: Path
) -> None:
    ssh = through_proxy(kit, env)
    size = (50 if os.environ.get("LEEWARD_FULL") else 16) << 20  # scripts/test: the short form
    await stream_with_blackouts(ssh, control_socket(tmp_path, env), size, 12, tmp_path)


async def test_a_blackout_resets_direct_ssh_and_the_relayed_session_rides_through(
    kit: Kit, env: EnvironmentSpec, tmp_path: Path
) -> None:
    user = kit.user("alice")
    direct = kit.ssh(env, user)
    relayed = through_proxy(kit, env)

    async def start(ssh: SSH, command: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *ssh.argv("ssh", "box", command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line == b"started\n", line
        return proc

    sock = control_socket(tmp_path, env)
    refused = await control.request(sock, {"op": "blackout", "seconds": -1})
    assert refused == {"ok": False, "error": "blackout needs 'seconds', a number >= 0"}
    plain = await start(direct, "echo started; sleep 60")
    carried = await start(relayed, "echo started; cat")
    assert await blackout(sock, 0.3) == 1
    # The direct connection was reset; ssh says so and exits.
    _, err = await asyncio.wait_for(plain.communicate(), 20)
    assert plain.returncode == 255, err
    # The relayed one never noticed.
    assert carried.stdin is not None and carried.stdout is not None
    carried.stdin.write(b"after the blackout\n")
    await carried.stdin.drain()
    assert await asyncio.wait_for(carried.stdout.readline(), 20) == b"after the blackout\n"
    carried.stdin.close()
    await asyncio.wait_for(carried.communicate(), 20)
    assert carried.returncode == 0
    # Two at once take turns; direct SSH works again once the listener is back.
    await asyncio.gather(blackout(sock, 0.1), blackout(sock, 0.1))
    done = await direct.run("ssh", "box", "echo back")
    assert (done.returncode, done.stdout) == (0, b"back\n"), done.stderr


async def test_an_agent_restart_ends_ssh_with_the_proxys_one_line(
    kit: Kit, env: EnvironmentSpec, provider: LocalProvider, tmp_path: Path
) -> None:
    ssh = through_proxy(kit, env)
    proc = await asyncio.create_subprocess_exec(
        *ssh.argv("ssh", "box", "echo started; cat"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"started\n"
    pid = int((tmp_path / "envs" / env.id / "agent.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # the VM died; the provider starts it again, same address
    await until(lambda: not pid_alive(pid), "the agent died", timeout=10)
    await provider.start(env)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert out == b""
    lines = [line for line in err.decode().splitlines() if line.startswith("leeward proxy")]
    assert lines == [
        "leeward proxy: box: the environment's agent restarted, or the environment moved to a "
        "new devserver (`leeward show box` says which): the session cannot be resumed; reconnect"
    ], err.decode()
