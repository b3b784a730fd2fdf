"""OpenSSH's own tools, with the ssh config that `leeward config-ssh` writes, against a real
environment of a real fleet: ssh, scp (SFTP and legacy), sftp, rsync and ssh -L."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

from sqlalchemy import select

from leeward.fleet.store.models import EnvironmentRow
from tests.conftest import echo_inside, free_port, run_ssh, ssh_access, until


async def tool(*argv: str, stdin: bytes | None = None, timeout: float = 60) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode == 0, f"{argv[0]} failed ({proc.returncode}): {err.decode()}"
    return out.decode()


async def test_openssh_tools_work_with_the_generated_config(
    start_fleet, config_factory, sqlite_url, tmp_path: Path
):
    async with start_fleet(config_factory(sqlite_url)) as f:
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "tools"}
        )
        assert status == 202
        await f.api.wait_state(env["id"], {"running"})
        paths = await ssh_access(f.api, tmp_path / "client", "alice")
        config = str(paths.ssh_config)
        text = paths.ssh_config.read_text()
        assert "StrictHostKeyChecking yes" in text
        assert f"HostKeyAlias tools.{env['region']}.leeward.test" in text

        code, out, err = await run_ssh(paths, "tools", "echo $((6 * 7)); exit 3")
        assert (code, out.strip()) == (3, "42"), err

        payload = tmp_path / "payload.bin"
        payload.write_bytes(os.urandom(300_000))
        await tool("scp", "-F", config, "-q", str(payload), "tools:up.bin")
        await tool("scp", "-O", "-F", config, "-q", str(payload), "tools:legacy.bin")
        back = tmp_path / "back.bin"
        await tool("scp", "-F", config, "-q", "tools:up.bin", str(back))
        assert back.read_bytes() == payload.read_bytes()
        code, out, _ = await run_ssh(paths, "tools", "cmp up.bin legacy.bin && echo same")
        assert out.strip() == "same"

        listing = await tool(
            "sftp",
            "-F",
            config,
            "-b",
            "-",
            "tools",
            stdin=b"mkdir made-by-sftp\nput "
            + str(payload).encode()
            + b" made-by-sftp/p\nls made-by-sftp\n",
        )
        assert "made-by-sftp/p" in listing

        tree = tmp_path / "tree"
        (tree / "sub").mkdir(parents=True)
        (tree / "a.txt").write_text("alpha\n")
        (tree / "sub" / "b.txt").write_text("beta\n")
        rsh = f"ssh -F {config}"
        await tool("rsync", "-a", "-e", rsh, f"{tree}/", "tools:tree/")
        mirror = tmp_path / "mirror"
        await tool("rsync", "-a", "-e", rsh, "tools:tree/", f"{mirror}/")
        assert (mirror / "sub" / "b.txt").read_text() == "beta\n"

        # ssh -L to a TCP service on the environment's side (its own loopback).
        service_port = free_port()
        code, _, err = await run_ssh(paths, "tools", echo_inside(service_port))
        assert code == 0, err
        local_port = free_port()
        forward = await asyncio.create_subprocess_exec(
            "ssh",
            "-F",
            config,
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            f"127.0.0.1:{local_port}:127.0.0.1:{service_port}",
            "tools",
            stdin=subprocess.DEVNULL,
        )
        try:
            answer = await through_forward(local_port, b"hello through -L\n")
            assert answer == b"hello through -L\n"
        finally:
            forward.terminate()
            await forward.wait()


async def through_forward(port: int, message: bytes, timeout: float = 20.0) -> bytes:
    """`message` through the forwarded port, and the first line back, once both ends are up:
    ssh listening here, and the service there (a connection the far end refused closes at
    once, empty: ask again, until the deadline)."""

    async def answered() -> bytes | None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return None
        try:
            writer.write(message)
            await writer.drain()
            return await asyncio.wait_for(reader.readline(), timeout) or None
        except (OSError, TimeoutError):
            return None
        finally:
            writer.close()

    return bytes(await until(answered, f"an answer through port {port}", timeout=timeout))


async def test_a_claim_retires_the_warm_containers_agent_token(
    start_fleet, config_factory, sqlite_url
):
    config = config_factory(sqlite_url, regions=1, warm_pool=1, pool_interval_seconds=0.2)
    async with start_fleet(config) as f:
        data_dir = config.provider.data_dir
        assert data_dir is not None

        async def warm_ids() -> list[str]:
            async with f.fleet.store.read() as session:
                rows = await session.execute(
                    select(EnvironmentRow.id).where(EnvironmentRow.state == "warm")
                )
                return list(rows.scalars())

        async def one_warm() -> int:
            return len(await warm_ids())

        await until(one_warm, expected=1)
        agent_file = data_dir / (await warm_ids())[0] / "agent.json"
        before = json.loads(agent_file.read_text())
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "container", "profile": "web"}
        )
        assert status == 201
        assert env["id"] == agent_file.parent.name
        after = json.loads(agent_file.read_text())
        old_token, new_token = before["agent_token"], after["agent_token"]
        assert old_token != new_token
        assert before["host_key"] != after["host_key"]
        assert after["owner"] == "alice"

        beat = {"environmentId": env["id"], "sessions": 0}
        status, body = await f.api.as_(old_token).call("POST", "/v1/agent/heartbeat", beat)
        assert status == 401
        status, body = await f.api.as_(new_token).call("POST", "/v1/agent/heartbeat", beat)
        assert status == 200
        assert body == {"intervalSeconds": 1.0}
