"""The host agent's API on its own, with a real local provider behind it: only its fleet's signed
commands are obeyed (every forgery refused with its reason), a start is idempotent (twice, or
twice at once, starts one agent), a bad body is a 422 that names the field, and the host's
config refuses a token file others can read."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import tomli_w
from aiohttp import web

from leeward.common.hostauth import CommandSigner, new_command_key, public_text
from leeward.fleet.ca import CertificateAuthority
from leeward.host.agent import HostAgent
from leeward.host.config import HostAgentConfig
from leeward.providers.local import LocalProvider
from tests.agent.kit import Fleet

HOST = "north-h1"


@pytest.fixture
async def host(tmp_path: Path):
    key = new_command_key()
    token = tmp_path / "token"
    token.write_text("lwh_test\n")
    token.chmod(0o600)
    config = HostAgentConfig(
        name=HOST,
        fleet_url="http://127.0.0.1:9",
        fleet_key=public_text(key),
        token_file=token,
        data_dir=tmp_path / "envs",
    )
    provider = LocalProvider(config.data_dir, start_timeout=30, stop_agents_on_exit=True)
    agent = HostAgent(config, provider, None, time.time)
    runner = web.AppRunner(agent.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    async with aiohttp.ClientSession() as http:
        yield Host(f"http://{host}:{port}", CommandSigner(key), http, agent)
    await runner.cleanup()
    await provider.close()


class Host:
    def __init__(self, url: str, signer: CommandSigner, http, agent: HostAgent) -> None:
        self.url, self.signer, self.http, self.agent = url, signer, http, agent

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        signer: CommandSigner | None = None,
        host: str = HOST,
        at: float | None = None,
        tamper: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict]:
        data = b"" if body is None else json.dumps(body).encode()
        signed = (signer or self.signer).headers(method, path, host, data, at or time.time())
        async with self.http.request(
            method,
            self.url + path,
            data=tamper or data,
            headers=signed if headers is None else headers,
        ) as response:
            return response.status, await response.json()


async def test_only_the_fleets_signed_commands_are_obeyed(host: Host):
    async with host.http.get(host.url + "/healthz") as response:
        assert response.status == 200
    other = CommandSigner(new_command_key())
    refusals = {
        "unsigned": await host.call("GET", "/v1/host", headers={}),
        "another key": await host.call("GET", "/v1/host", signer=other),
        "another host": await host.call("GET", "/v1/host", host="north-h2"),
        "old": await host.call("GET", "/v1/host", at=time.time() - 120),
        # Within the window, but signed before this host agent started (its memory of nonces
        # begins then: a replay of a command from before a restart).
        "before its start": await host.call("GET", "/v1/host", at=time.time() - 5),
        "tampered": await host.call(
            "POST", "/v1/running", {"ids": ["a"]}, tamper=b'{"ids": ["b"]}'
        ),
    }
    reasons = {
        what: (status, body["error"]["message"]) for what, (status, body) in refusals.items()
    }
    assert {status for status, _ in reasons.values()} == {401}, reasons
    assert "only the fleet" in reasons["unsigned"][1]
    assert "not this host's fleet's" in reasons["another key"][1]
    assert "north-h2" in reasons["another host"][1]
    assert "clocks" in reasons["old"][1]
    assert "before this host agent started" in reasons["before its start"][1]
    assert "not this host's fleet's" in reasons["tampered"][1]

    # A replay of a command seen before: the same headers again.
    data = b""
    headers = host.signer.headers("GET", "/v1/host", HOST, data, time.time())
    async with host.http.get(host.url + "/v1/host", headers=headers) as response:
        assert response.status == 200
        status = await response.json()
    async with host.http.get(host.url + "/v1/host", headers=headers) as response:
        assert response.status == 401 and "replay" in (await response.json())["error"]["message"]
    assert status["environments"] == [] and status["network"] == "loopback"


async def test_starts_are_idempotent_and_bodies_are_checked(host: Host, tmp_path: Path):
    fleet = Fleet(ca=CertificateAuthority.generate(), tmp=tmp_path)
    spec = fleet.spec(host=HOST)
    path = f"/v1/environments/{spec.id}"
    answers = await asyncio.gather(
        *(host.call("PUT", path, spec.to_wire().wire()) for _ in range(2))
    )
    assert [status for status, _ in answers] == [200, 200], answers
    pid = int((tmp_path / "envs" / spec.id / "agent.pid").read_text())
    assert (await host.call("PUT", path, spec.to_wire().wire()))[0] == 200
    assert int((tmp_path / "envs" / spec.id / "agent.pid").read_text()) == pid, "started once"
    status, running = await host.call("POST", "/v1/running", {"ids": [spec.id, "e-nothere"]})
    assert (status, running) == (200, {"running": [spec.id]})
    status, body = await host.call("GET", "/v1/host")
    assert body["environments"] == [spec.id], body

    bad = {**spec.to_wire().wire(), "sshPort": 0}
    status, body = await host.call("PUT", path, bad)
    assert status == 422 and body["error"]["field"] == "sshPort", body
    status, body = await host.call("PUT", "/v1/environments/e-other", spec.to_wire().wire())
    assert status == 422 and body["error"]["field"] == "id", body
    status, body = await host.call(
        "POST", "/v1/environments/e-nothere/migrate", {"source": "north-h2", "blackoutSeconds": 0}
    )
    assert status == 409 and "disk" in body["error"]["message"], body

    assert (await host.call("DELETE", path))[0] == 200
    assert not (tmp_path / "envs" / spec.id).exists()
    assert (await host.call("DELETE", path))[0] == 200, "a second delete is fine"


def test_a_token_file_others_can_read_is_refused(tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("lwh_x\n")
    token.chmod(0o644)
    config = tmp_path / "host.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "name": HOST,
                "fleet_url": "http://127.0.0.1:9",
                "fleet_key": public_text(new_command_key()),
                "token_file": str(token),
                "data_dir": str(tmp_path / "envs"),
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "leeward.cli", "host", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "chmod 600" in done.stderr and "Traceback" not in done.stderr, done.stderr
