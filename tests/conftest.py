"""Fixtures shared by the whole suite: fleet configs on random loopback ranges, databases
(SQLite, and PostgreSQL when LEEWARD_TEST_POSTGRES is set), and a running fleet with the real
local provider and real agents."""

from __future__ import annotations

import contextlib
import ipaddress
import json as json_module
import os
import random
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.engine import make_url

from leeward.fleet import auth
from leeward.fleet.config import FleetConfig, HostConfig, RegionConfig
from leeward.fleet.main import running_fleet
from leeward.fleet.runtime import Fleet
from leeward_protocol.fleet import ContainerProfile, Flavor, FlavorKind, Hardware, Role

POSTGRES_ENV = "LEEWARD_TEST_POSTGRES"
# Ranges other test areas use: agent tests 127.200.0.0/13, CLI tests 127.208.0.0/12.
FLEET_TEST_OCTETS = range(110, 200)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long files first: the VS Code e2e tests, then the other long fault and load runs
    (marked slow). scripts/test runs pytest-xdist with --dist loadfile, which hands files out in
    collection order: a long file collected last ran alone at the end while the other worker
    waited."""

    def weight(item: pytest.Item) -> int:
        if item.get_closest_marker("e2e"):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=weight)  # stable: each file's tests stay in their order


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_endpoint() -> tuple[str, int]:
    """A random address in 127.200.0.0/13 (the agent tests' range) and a port free on it now."""
    while True:
        a, b, c = random.randint(200, 207), random.randint(0, 255), random.randint(1, 254)
        address = f"127.{a}.{b}.{c}"
        with socket.socket() as s:
            try:
                s.bind((address, 0))
            except OSError:
                continue
            return address, s.getsockname()[1]


def pick_networks(count: int) -> list[ipaddress.IPv4Network]:
    octets = random.sample(FLEET_TEST_OCTETS, count)
    return [ipaddress.IPv4Network(f"127.{o}.0.0/16") for o in octets]


def small_config(
    tmp_path: Path,
    database: str,
    *,
    regions: int = 2,
    hosts: int = 2,
    host_cpus: int = 16,
    host_memory_gib: int = 64,
    warm_pool: int = 0,
    **overrides: Any,
) -> FleetConfig:
    """A fleet small enough for a test: `regions` × `hosts`, flavors tiny/small/gpu, a web
    profile. Networks and the SSH port are random so parallel runs do not collide."""
    nets = pick_networks(regions)
    names = ["north", "south", "east", "west"][:regions]
    config = FleetConfig(
        zone="leeward.test",
        listen_host="127.0.0.1",
        listen_port=0,
        database=database,
        heartbeat_seconds=1.0,
        regions=[
            RegionConfig(
                name=name,
                network=net,
                hosts=[
                    HostConfig(
                        name=f"{name}-h{i}",
                        cpus=host_cpus,
                        memory_gib=host_memory_gib,
                        gpus=1 if i == hosts else 0,
                    )
                    for i in range(1, hosts + 1)
                ],
            )
            for name, net in zip(names, nets, strict=True)
        ],
        flavors=[
            Flavor(name="tiny", kind=FlavorKind.VM, hardware=Hardware(cpus=1, memory_gib=2)),
            Flavor(name="small", kind=FlavorKind.VM, hardware=Hardware(cpus=2, memory_gib=8)),
            Flavor(
                name="gpu", kind=FlavorKind.GPU, hardware=Hardware(cpus=4, memory_gib=16, gpus=1)
            ),
        ],
        profiles=[
            ContainerProfile(
                name="web", hardware=Hardware(cpus=2, memory_gib=4), warm_pool=warm_pool
            )
        ],
        **overrides,
    )
    config.provider.data_dir = tmp_path / "environments"
    config.provider.ssh_port = free_port(str(nets[0][1]))
    config.dns.port = 0  # any free port: tests run side by side
    return config


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}"


@contextlib.asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """A new PostgreSQL database for one test, dropped afterwards."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set; the PostgreSQL variant is skipped")
    import asyncpg

    url = make_url(base)
    name = f"leeward_t_{secrets.token_hex(5)}"
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each test that takes this runs on SQLite and on PostgreSQL (when configured)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}"
        return
    async with fresh_postgres_database() as url:
        yield url


async def make_user(fleet: Fleet, name: str, role: Role = Role.USER) -> str:
    """A user with a fresh token, straight through the store."""
    async with fleet.store.write() as session:
        await auth.ensure_user(session, name, role, fleet.clock.now())
        token, _ = await auth.issue_token(session, name, fleet.clock.now())
    return token


class Api:
    """A small client for tests: raw status and JSON, so tests see exactly what went out."""

    def __init__(self, url: str, http: aiohttp.ClientSession, token: str | None) -> None:
        self.url = url
        self.http = http
        self.token = token

    def as_(self, token: str | None) -> Api:
        return Api(self.url, self.http, token)

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        merged = dict(headers or {})
        if self.token is not None:
            merged.setdefault("Authorization", f"Bearer {self.token}")
        async with self.http.request(
            method, self.url + path, json=json, data=data, headers=merged
        ) as response:
            text = await response.text()
            try:
                body = json_module.loads(text) if text else None
            except ValueError:
                body = text
            return response.status, body

    async def wait_state(self, env_id: str, states: set[str], timeout: float = 30.0) -> Any:
        """Poll an environment until it reaches one of `states`, with a deadline."""
        last: list[Any] = []

        async def reached() -> Any:
            status, body = last[:] = await self.call("GET", f"/v1/environments/{env_id}")
            return body if status == 200 and body["state"] in states else None

        try:
            return await until(reached, f"{env_id} in {states}", timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last: {last}") from None


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[..., FleetConfig]:
    def make(database: str, **kwargs: Any) -> FleetConfig:
        return small_config(tmp_path, database, **kwargs)

    return make


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class RunningFleet:
    def __init__(self, url: str, fleet: Fleet, api: Api, admin: Api) -> None:
        self.url = url
        self.fleet = fleet
        self.api = api
        self.admin = admin

    async def user(self, name: str, role: Role = Role.USER) -> Api:
        return self.api.as_(await make_user(self.fleet, name, role))


@pytest.fixture
def start_fleet(
    http: aiohttp.ClientSession,
) -> Callable[..., Any]:
    """`async with start_fleet(config) as f:` a fleet with the real local provider; `f.api` is
    signed in as user `alice`, `f.admin` as admin `root-admin`. Agents are stopped after."""

    @contextlib.asynccontextmanager
    async def start(config: FleetConfig, **kwargs: Any) -> AsyncIterator[RunningFleet]:
        config.provider.stop_agents_on_exit = True
        async with running_fleet(config, **kwargs) as (url, fleet):
            alice = await make_user(fleet, "alice")
            admin = await make_user(fleet, "root-admin", Role.ADMIN)
            yield RunningFleet(url, fleet, Api(url, http, alice), Api(url, http, admin))
            await fleet.idle()

    return start


async def ssh_access(api: Api, home: Path, user: str) -> Any:
    """A key, a certificate from the fleet and an ssh config for `api`'s running
    environments, all under `home`: what `leeward login` + `config-ssh` make, for tests."""
    from leeward.client.paths import Paths
    from leeward.client.sshconfig import ensure_identity, public_key, write_ssh_files
    from leeward_protocol.fleet import EnvironmentList, SSHAuthorities

    paths = Paths(
        config_dir=home / "config",
        data_dir=home / "data",
        state_dir=home / "state",
        ssh_dir=home / "ssh",
    )
    ensure_identity(paths)
    status, body = await api.call("POST", "/v1/ssh/certificate", {"publicKey": public_key(paths)})
    assert status == 200, body
    paths.certificate.write_text(body["certificate"] + "\n")
    _, envs = await api.call("GET", "/v1/environments")
    _, cas = await api.call("GET", "/v1/ssh/authorities")
    write_ssh_files(
        paths,
        environments=EnvironmentList.model_validate(envs).environments,
        user=user,
        authorities=SSHAuthorities.model_validate(cas),
    )
    return paths


async def run_ssh(
    paths: Any, alias: str, command: str, timeout: float = 30
) -> tuple[int, str, str]:
    """The real OpenSSH client, with only the generated config."""
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        "ssh",
        "-F",
        str(paths.ssh_config),
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        alias,
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


ECHO_SERVER = """
import socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    conn, _ = server.accept()
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.close()
"""


def echo_inside(port: int) -> str:
    """A shell command that leaves an echo server on the environment's own 127.0.0.1:`port`
    (in its sandbox's network: the host's loopback is not the environment's), for `ssh -L`."""
    code = ECHO_SERVER.encode().hex()
    return f"nohup python3 -c 'exec(bytes.fromhex(\"{code}\"))' {port} >/dev/null 2>&1 </dev/null &"


_TRUE = object()


async def until(
    probe: Callable[[], Any],
    what: str = "the condition",
    *,
    expected: Any = _TRUE,
    timeout: float = 30.0,
) -> Any:
    """The suite's one wait: poll `probe` (plain or async) until it returns `expected` (or,
    without it, something true), with a deadline; that value. Nothing in the suite sleeps a
    fixed time and hopes."""
    import asyncio
    import inspect

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = probe()
        if inspect.isawaitable(got):
            got = await got
        if (got == expected) if expected is not _TRUE else got:
            return got
        if loop.time() > deadline:
            wanted = "" if expected is _TRUE else f" (expected {expected!r}, still {got!r})"
            raise AssertionError(f"{what}: not within {timeout} s{wanted}")
        await asyncio.sleep(0.01)
