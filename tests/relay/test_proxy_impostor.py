"""`ssh NAME` through `leeward proxy` when the only address found for the environment belongs to
a server the fleet's host CA did not sign: the proxy names the impostor at once, on the stderr
that ssh shows, and gives up within its documented bound (`IMPOSTOR_WAIT`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from leeward.client.credentials import Credentials, store_credentials
from leeward.client.sshconfig import write_ssh_files
from leeward.relay.agent import RelayServer
from leeward.relay.handshake import HostIdentity
from leeward.relay.proxy import IMPOSTOR_WAIT
from leeward_protocol.fleet import EnvironmentList, SSHAuthorities
from tests.conftest import small_config, ssh_access, until

from .conftest import LEEWARD

AT_ONCE = 3.0
"""When the impostor's sentence must be on ssh's stderr: ssh's and the proxy's start, one race."""

SLACK = 5.0
"""What the test allows past a bound: ssh's and the proxy's start on a loaded machine."""


async def never_reached(sock: socket.socket) -> None:
    """The rogue relay's inner server: the proxy opens nothing on a host it did not verify."""
    sock.close()


@contextlib.asynccontextmanager
async def rogue(
    address: str, ssh_port: int, relay_port: int, fqdn: str, kind: str
) -> AsyncIterator[RelayServer]:
    """An SSH server and a relay end at `address` whose host key the fleet never signed:
    `self-signed` (a bare key; its own key signs its relay certificate) or `another CA` (a
    certificate for the right name from a CA that is not the fleet's). Both speak their
    protocols correctly; only the trust fails."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    signer = key if kind == "self-signed" else asyncssh.generate_private_key("ssh-ed25519")
    certificate = signer.generate_host_certificate(key, "rogue", principals=[fqdn])
    host_key: Any = key if kind == "self-signed" else (key, certificate)
    ssh = await asyncssh.create_server(
        asyncssh.SSHServer, address, ssh_port, server_host_keys=[host_key]
    )
    relay = RelayServer(
        HostIdentity(key, certificate.export_certificate().decode()), fqdn, never_reached
    )
    await relay.listen(address, relay_port)
    try:
        yield relay
    finally:
        await relay.close()
        ssh.close()
        await ssh.wait_closed()


class FleetFront:
    """The fleet's API as the client sees it, at an address of its own: passes requests on,
    hangs them (a black hole), or is gone (nothing listens). The client's cache is kept per
    fleet URL, so the API goes down without the URL changing."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").rpartition(":")
        self.upstream = (host, int(port))
        self.mode = "pass"
        self.server: asyncio.Server | None = None
        self.held: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "hang":
            self.held.append(writer)
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            with contextlib.suppress(OSError):
                w.write_eof()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        up_writer.close()
        writer.close()

    async def stop(self) -> None:
        """Nothing listens at the URL any more: connections are refused."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for writer in self.held:
            writer.close()


class Client:
    """alice's machine: her ssh files with `leeward proxy` as ProxyCommand, her credentials,
    and the real OpenSSH client."""

    def __init__(self, home: Path, paths: Any) -> None:
        self.home = home
        self.paths = paths
        self.env = {
            **os.environ,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "xdg-config"),
            "XDG_STATE_HOME": str(home / "xdg-state"),
        }
        self.cache = home / "xdg-state" / "leeward" / "addresses.json"

    def sign_in(self, fleet: str, token: str) -> None:
        store_credentials(
            self.home / "xdg-config" / "leeward" / "credentials.toml", Credentials(fleet, token)
        )

    async def ssh(self, host: str, command: str, *options: str) -> tuple[int, str, float, float]:
        """Exit code, stderr, when the first line of stderr came and when ssh ended (seconds
        from its start)."""
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            "ssh",
            "-F",
            str(self.paths.ssh_config),
            "-o",
            "BatchMode=yes",
            *options,
            host,
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        assert proc.stderr is not None
        lines: list[str] = []
        first = float("inf")
        async with asyncio.timeout(IMPOSTOR_WAIT + 60):
            while line := await proc.stderr.readline():
                first = min(first, time.monotonic() - started)
                lines.append(line.decode())
            code = await proc.wait()
        return code, "".join(lines), first, time.monotonic() - started


def said(err: str) -> list[str]:
    """The proxy's lines among ssh's stderr."""
    prefix = "leeward proxy: box: "
    return [line.removeprefix(prefix) for line in err.splitlines() if line.startswith(prefix)]


async def with_proxy(api: Any, client: Client) -> None:
    """Rewrite alice's ssh config as `config-ssh` does: every entry through `leeward proxy`."""
    _, envs = await api.call("GET", "/v1/environments")
    _, cas = await api.call("GET", "/v1/ssh/authorities")
    write_ssh_files(
        client.paths,
        environments=EnvironmentList.model_validate(envs).environments,
        user="alice",
        authorities=SSHAuthorities.model_validate(cas),
        proxy=LEEWARD,
    )


@pytest.mark.parametrize("kind", ["self-signed", "another CA"])
async def test_ssh_names_an_impostor_at_the_environments_address_at_once(
    start_fleet, tmp_path: Path, sqlite_url: str, kind: str
) -> None:
    async with start_fleet(small_config(tmp_path, sqlite_url, regions=1, hosts=1)) as f:
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "box"}
        )
        assert status == 202, env
        env = await f.api.wait_state(env["id"], {"running"})
        front = FleetFront(f.url)
        url = await front.start()
        home = tmp_path / "alice"
        client = Client(home, await ssh_access(f.api, home, "alice"))
        await with_proxy(f.api, client)
        client.sign_in(url, f.api.token or "")

        # Reached once: its address, and the fleet's zone and DNS, are in alice's cache.
        code, err, _, _ = await client.ssh("box", "true")
        assert code == 0, err
        await until(
            lambda: client.cache.exists() and '"dns"' in client.cache.read_text(),
            "the fleet's DNS cached",
            timeout=10,
        )

        # The agent is gone (the fleet still has it running there), and a rogue took its
        # address and ports.
        await f.fleet.provider.stop(env["id"])
        sentence = (
            f"the host at {env['address']} is not signed by the fleet's host CA for "
            f"{env['fqdn']}: an impostor, or a stale address"
        )
        looking = f"{sentence}; looking again while a migration could explain it"
        given_up = (
            f"{sentence}; still so after {IMPOSTOR_WAIT:g} s, and the fleet cannot say whether "
            "box moved; try again when it answers (`leeward locate box`)"
        )
        async with rogue(
            env["address"], env["sshPort"], env["relayPort"], env["fqdn"], kind
        ) as relay:
            # Plain OpenSSH to the SSH port refuses the rogue's host key, as always.
            code, err, _, _ = await client.ssh("box", "true", "-o", "ProxyCommand=none")
            assert code == 255 and "Host key verification failed" in err, err

            # The fleet answers (running, at that address): nothing else will come. One line,
            # the verdict, at once.
            verdict = f"{sentence}; the fleet says box is running; report it to the fleet's"
            code, err, _, ended = await client.ssh("box", "true")
            assert code == 255 and said(err) == [verdict + " operators"], err
            assert ended < AT_ONCE, (ended, err)

            # The fleet's DNS down: the API and the cache lead to the same rogue.
            status, _ = await f.admin.call("POST", "/v1/admin/dns/stop")
            assert status == 200
            code, err, _, ended = await client.ssh("box", "true")
            assert code == 255 and said(err) == [verdict + " operators"], err
            assert ended < AT_ONCE, (ended, err)

            # The API hangs (DNS back up): nobody can say whether a migration is in flight.
            # Said at once all the same; given up within the bound.
            status, _ = await f.admin.call("POST", "/v1/admin/dns/start")
            assert status == 200
            front.mode = "hang"
            code, err, first, ended = await client.ssh("box", "true")
            assert code == 255 and said(err) == [looking, given_up], err
            assert first < AT_ONCE, (first, err)
            assert IMPOSTOR_WAIT <= ended < IMPOSTOR_WAIT + SLACK, (ended, err)

            # The API down (nothing listens) and DNS down: only the cache is left.
            await front.stop()
            status, _ = await f.admin.call("POST", "/v1/admin/dns/stop")
            assert status == 200
            code, err, first, ended = await client.ssh("box", "true")
            assert code == 255 and said(err) == [looking, given_up], err
            assert first < AT_ONCE, (first, err)
            assert IMPOSTOR_WAIT <= ended < IMPOSTOR_WAIT + SLACK, (ended, err)

            assert relay.sessions == {}, "nothing was opened on the rogue"


async def test_ssh_to_a_deleted_environment_ends_at_once_with_the_fleets_word(
    start_fleet, tmp_path: Path, sqlite_url: str
) -> None:
    """The fleet's 404 is its word that no such environment exists: looking again for 20 s
    cannot change it (it used to end in "cannot reach box")."""
    async with start_fleet(small_config(tmp_path, sqlite_url, regions=1, hosts=1)) as f:
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "box"}
        )
        assert status == 202, env
        await f.api.wait_state(env["id"], {"running"})
        home = tmp_path / "alice"
        client = Client(home, await ssh_access(f.api, home, "alice"))
        await with_proxy(f.api, client)
        client.sign_in(f.url, f.api.token or "")
        code, err, _, _ = await client.ssh("box", "true")
        assert code == 0, err

        status, _ = await f.api.call("DELETE", f"/v1/environments/{env['id']}")
        assert status == 202
        await f.api.wait_state(env["id"], {"deleted"})
        code, err, _, ended = await client.ssh("box", "true")
        assert code == 255, err
        assert any("No environment 'box'" in line for line in said(err)), err
        assert ended < AT_ONCE, (ended, err)
