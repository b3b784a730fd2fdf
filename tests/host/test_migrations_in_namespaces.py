"""Live migrations at the network layer: a fleet on the local fabric (`network.kind =
"namespaces"`), two real host agents each in its host's namespace, a devserver moved between
them through the fleet's API while an `ssh` session through `leeward proxy` streams into
`sha256sum`. The route moves with each migration; the session ends with the digest of what was
sent and the shell it started with; a plain TCP connection to the environment made before a
move is reset after it (the new host's kernel knows nothing of it)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import socket
from pathlib import Path

import pytest

from leeward.providers.fabric import Fabric
from tests.conftest import until
from tests.host.namespaced import namespaced_fleet

PROBE = Fabric.probe()
pytestmark = pytest.mark.skipif(not PROBE[0], reason=f"no network namespaces: {PROBE[1]}")

MIGRATIONS = 5


async def test_a_session_streams_through_live_migrations_that_move_its_route(
    start_fleet, tmp_path: Path, sqlite_url
):
    async with namespaced_fleet(start_fleet, tmp_path, sqlite_url) as n:
        session = await n.ssh("echo $$; sha256sum; echo $$")
        assert session.stdin is not None and session.stdout is not None
        shell = (await session.stdout.readline()).strip()
        assert shell.isdigit(), shell
        sent = hashlib.sha256()
        sent_bytes = [0]
        streaming, done = asyncio.Event(), asyncio.Event()

        async def feed() -> None:
            assert session.stdin is not None
            while not done.is_set():
                chunk = os.urandom(64 * 1024)
                session.stdin.write(chunk)
                sent.update(chunk)
                sent_bytes[0] += len(chunk)
                await session.stdin.drain()
                streaming.set()
                await asyncio.sleep(0.01)  # pacing a stream (64 KiB every 10 ms), not a wait
            session.stdin.close()

        feeder = asyncio.create_task(feed())
        await streaming.wait()

        # A plain TCP connection to the environment's SSH port, made before the moves.
        direct = socket.create_connection((n.env["address"], n.env["sshPort"]), timeout=5)
        banner = b""
        while not banner.endswith(b"\n"):
            banner += await asyncio.to_thread(direct.recv, 256)

        for _ in range(MIGRATIONS):
            await n.migrate()
            moved_at = sent_bytes[0]
            await until(  # a little streaming between moves
                lambda at=moved_at: sent_bytes[0] >= at + 256 * 1024, "streaming again", timeout=30
            )
        done.set()
        await feeder
        async with asyncio.timeout(60):
            out, err = await session.communicate()
        words = out.decode().split()
        assert session.returncode == 0, err.decode()
        assert words[0] == sent.hexdigest(), "every byte, in order"
        assert words[-1].encode() == shell, "the same shell, start to end"

        # The plain connection was made to the first host; its segments now reach another,
        # which resets it: ECONNRESET (EPIPE when the reset is in before the send).
        try:
            direct.sendall(b"SSH-2.0-probe\r\n")
            got: bytes | OSError = await asyncio.to_thread(direct.recv, 4096)
        except OSError as exc:
            got = exc
        assert isinstance(got, OSError) and got.errno in (errno.ECONNRESET, errno.EPIPE), got
        direct.close()
