"""Who may carry or resume a session, and how `leeward proxy` fails when it cannot: one line
on stderr naming the cause, and not one byte on stdout that is not the stream's next."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from leeward.client.refusals import LocateError
from leeward.fleet.ca import CertificateAuthority
from leeward.relay.agent import RelayServer, RelaySettings
from leeward.relay.candidates import Candidate, Fixed
from leeward.relay.handshake import (
    HandshakeRefused,
    HostIdentity,
    Ticket,
    client_handshake,
    host_authorities,
)
from leeward.relay.proxy import IMPOSTOR_WAIT, RESOLVE_EVERY, Impostors, Proxy, ProxySettings
from leeward.relay.stream import RelayFailure
from tests.agent.kit import ZONE, Fleet, Kit
from tests.conftest import free_endpoint, until

from .conftest import LEEWARD

FQDN = f"echo.test-region.{ZONE}"


async def echo(sock: socket.socket) -> None:
    """The inner server of these tests: sends back what it gets."""
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def identity(ca: CertificateAuthority, fqdn: str = FQDN) -> HostIdentity:
    fleet = Fleet(ca=ca, tmp=Path("."))
    found = fleet.identity("e-echo", fqdn, "alice")
    return HostIdentity(asyncssh.import_private_key(found.host_key), found.host_certificate)


@dataclass
class Agent:
    address: str
    port: int
    server: RelayServer

    async def restart(self, ca: CertificateAuthority) -> None:
        """A new agent process at the same address: same identity, no sessions."""
        old = self.server
        await old.close()
        self.server = RelayServer(old.identity, FQDN, echo, old.settings)
        await self.server.listen(self.address, self.port)


@pytest.fixture
async def agent(ca: CertificateAuthority) -> AsyncIterator[Agent]:
    address, port = free_endpoint()
    server = RelayServer(identity(ca), FQDN, echo, RelaySettings(buffer_bytes=1 << 20))
    await server.listen(address, port)
    found = Agent(address, port, server)
    yield found
    await found.server.close()


class ProxyProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out = bytearray()

    async def roundtrip(self, data: bytes) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()
        want = len(self.out) + len(data)
        async with asyncio.timeout(20):
            while len(self.out) < want:
                chunk = await self.proc.stdout.read(65536)
                assert chunk, "the proxy ended its output"
                self.out += chunk

    async def failure(self, timeout: float = 30) -> str:
        """Wait for the proxy to exit; its stderr. Whatever it still wrote is kept in `out`."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        async with asyncio.timeout(timeout):
            self.out += await self.proc.stdout.read()
            err = (await self.proc.stderr.read()).decode()
            assert await self.proc.wait() == 255, err
        return err


@contextlib.asynccontextmanager
async def proxy(kit: Kit, agent: Agent, *options: str) -> AsyncIterator[ProxyProcess]:
    proc = await asyncio.create_subprocess_exec(
        LEEWARD,
        "proxy",
        "echo",
        "--address",
        agent.address,
        "--port",
        str(agent.port),
        "--fqdn",
        FQDN,
        "--known-hosts",
        str(kit.known_hosts),
        "--no-status",
        *options,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield ProxyProcess(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_a_server_whose_key_the_fleet_did_not_sign_is_refused(kit: Kit) -> None:
    rogue_ca = CertificateAuthority.generate()
    address, port = free_endpoint()
    rogue = RelayServer(identity(rogue_ca), FQDN, echo)
    await rogue.listen(address, port)
    try:
        async with proxy(kit, Agent(address, port, rogue)) as p:
            err = await p.failure()
        # The one line names the host, and what it may be.
        assert (
            f"leeward proxy: echo: the host at {address} is not signed by the fleet's host CA "
            f"for {FQDN}: an impostor, or a stale address\n"
        ) == err
        assert p.out == b""
        assert rogue.sessions == {}, "nothing was opened on the rogue"
    finally:
        await rogue.close()


async def test_a_certificate_for_another_environment_is_refused(
    kit: Kit, ca: CertificateAuthority
) -> None:
    address, port = free_endpoint()
    other = RelayServer(identity(ca, f"other.test-region.{ZONE}"), FQDN, echo)
    await other.listen(address, port)
    try:
        async with proxy(kit, Agent(address, port, other)) as p:
            err = await p.failure()
        assert f"not for {FQDN}" in err
    finally:
        await other.close()


async def test_only_the_holder_of_the_session_secret_can_resume(kit: Kit, agent: Agent) -> None:
    cas = host_authorities(kit.known_hosts, FQDN)

    async def handshake(ticket: Ticket | None) -> tuple[object, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(agent.address, agent.port)
        try:
            return await client_handshake(
                reader, writer, fqdn=FQDN, authorities=cas, resume=ticket
            ), writer
        except BaseException:
            writer.close()
            raise

    welcomed, first = await handshake(None)
    ticket = welcomed.ticket  # type: ignore[attr-defined]
    stranger = Ticket(ticket.session, b"\0" * 32, ticket.boot)
    with pytest.raises(HandshakeRefused, match="resume proof is wrong") as refused:
        await handshake(stranger)
    assert refused.value.reason == "bad-proof"
    assert not first.transport.is_closing(), "a refused stranger does not cut the session's link"
    with pytest.raises(HandshakeRefused) as unknown:
        await handshake(Ticket("0" * 32, ticket.secret, ticket.boot))
    assert unknown.value.reason == "unknown-session"
    resumed, second = await handshake(ticket)
    assert resumed.ticket == ticket  # type: ignore[attr-defined]
    first.close()
    second.close()


async def test_a_restarted_agent_ends_the_proxy_with_that_reason(
    kit: Kit, agent: Agent, ca: CertificateAuthority
) -> None:
    async with proxy(kit, agent) as p:
        await p.roundtrip(b"before the restart\n")
        await agent.restart(ca)
        err = await p.failure()
    assert "agent restarted" in err and err.count("\n") == 1, err
    assert p.out == b"before the restart\n"


async def test_a_peer_that_lost_bytes_the_buffer_no_longer_holds_is_an_overflow(
    kit: Kit, agent: Agent
) -> None:
    async with proxy(kit, agent, "--buffer-mib", "1") as p:
        await p.roundtrip(b"x" * 300_000)
        (session,) = agent.server.sessions.values()
        # The agent forgets what it received (as a peer that lost its state would): the proxy
        # has dropped those bytes from its buffer since they were acknowledged.
        await until(
            lambda: session.endpoint.outbox.base >= 300_000, "the proxy dropped what was acked"
        )
        session.endpoint.received = 0
        session.endpoint.drop_link()
        err = await p.failure()
    assert "replay buffer overflowed (1 MiB)" in err and err.count("\n") == 1, err
    assert p.out == b"x" * 300_000, "nothing replayed, nothing duplicated"


async def test_a_path_dark_past_the_deadline_ends_the_proxy_with_that_reason(
    kit: Kit, agent: Agent
) -> None:
    async with proxy(kit, agent, "--deadline", "1") as p:
        await p.roundtrip(b"hello\n")
        await agent.server.close_listener()
        agent.server.reset_links()
        started = time.monotonic()
        err = await p.failure()
    assert "could not resume within 1 s" in err and err.count("\n") == 1, err
    assert time.monotonic() - started < 10
    assert p.out == b"hello\n"


async def test_a_session_the_agent_let_expire_ends_the_proxy_with_that_reason(
    kit: Kit, ca: CertificateAuthority
) -> None:
    address, port = free_endpoint()
    server = RelayServer(identity(ca), FQDN, echo, RelaySettings(keep_seconds=0.3))
    await server.listen(address, port)
    try:
        async with proxy(kit, Agent(address, port, server)) as p:
            await p.roundtrip(b"hello\n")
            await server.close_listener()
            server.reset_links()
            await until(lambda: not server.sessions, "the agent forgot the session", timeout=10)
            await server.listen(address, port)
            err = await p.failure()
        assert "no longer has this session (it expired)" in err and err.count("\n") == 1, err
        assert p.out == b"hello\n"
    finally:
        await server.close()


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


class Nowhere:
    last_error = "connection refused"

    async def candidates(self, name: str) -> list[Candidate]:
        return [Candidate("127.0.0.1", 1, FQDN, "test")]


async def test_resuming_backs_off_with_jitter_and_stops_at_the_deadline() -> None:
    clock = FakeClock()
    proxy = Proxy("echo", Nowhere(), lambda fqdn: [], ProxySettings(deadline=600), clock=clock)
    proxy.ticket = Ticket("s", b"k" * 32, "boot")
    with pytest.raises(RelayFailure, match=r"could not resume within 10 min") as failed:
        await proxy.connect(600, 0)
    assert failed.value.cause == "deadline"
    assert clock.t == pytest.approx(1600.0)
    assert clock.slept[0] <= 0.1 and max(clock.slept) <= 2.0
    assert len(set(clock.slept)) > 10, "jitter"


IMPOSTOR = f"the host at 127.0.0.9 is not signed by the fleet's host CA for {FQDN}: an impostor"


@dataclass
class Impostor:
    """A locator whose only address holds an impostor (`leeward.client.locate` said so), with
    what the fleet answered of the environment (None: it could not be asked)."""

    fleet_state: str | None

    async def candidates(self, name: str) -> list[Candidate]:
        message = f"Cannot reach {name}: api: {IMPOSTOR}."
        raise LocateError(message, impostor=IMPOSTOR, fleet_state=self.fleet_state)


def searching(locator: object, clock: FakeClock) -> tuple[Proxy, list[str]]:
    said: list[str] = []
    found = Proxy(
        "echo",
        locator,  # type: ignore[arg-type]
        lambda fqdn: [],
        ProxySettings(),
        clock=clock,  # type: ignore[arg-type]
        impostors=Impostors(clock, said.append),  # type: ignore[arg-type]
    )
    return found, said


@pytest.mark.parametrize("state", ["running", "migrating"])
async def test_an_impostor_the_fleet_stands_by_ends_the_search_at_once(state: str) -> None:
    """Running there: nothing else will answer. Migrating: the Finder already waited out the
    blackout before it answered so."""
    clock = FakeClock()
    proxy, said = searching(Impostor(state), clock)
    with pytest.raises(RelayFailure) as failed:
        await proxy.connect(20, 0)
    assert failed.value.cause == "impostor"
    assert str(failed.value).startswith(IMPOSTOR + "; ")
    verdict = {"running": "the fleet says echo is running", "migrating": "echo was migrating"}
    assert verdict[state] in str(failed.value)
    assert said == [] and clock.slept == [], "one line: the verdict"


async def test_without_the_fleets_word_an_impostor_is_said_once_then_the_bound_ends_it() -> None:
    clock = FakeClock()
    proxy, said = searching(Impostor(None), clock)
    with pytest.raises(RelayFailure) as failed:
        await proxy.connect(20, 0)
    assert failed.value.cause == "impostor"
    assert str(failed.value) == (
        f"{IMPOSTOR}; still so after {IMPOSTOR_WAIT:g} s, and the fleet cannot say whether echo "
        "moved; try again when it answers (`leeward locate echo`)"
    )
    assert said == [f"{IMPOSTOR}; looking again while a migration could explain it"]
    assert clock.t - 1000.0 == pytest.approx(IMPOSTOR_WAIT), "the bound, not first_connect's 20 s"
    assert all(pause >= 0.05 for pause in clock.slept[:-1]), "backoff, not the 10 ms knock"


async def test_a_resume_through_an_impostor_at_a_fixed_address_ends_after_the_bound(
    kit: Kit,
) -> None:
    """A session's address (given on the command line) now answers with another CA's host:
    said once, at once; the session ends after the bound, not the 10 min resume deadline."""
    address, port = free_endpoint()
    rogue = RelayServer(identity(CertificateAuthority.generate()), FQDN, echo)
    await rogue.listen(address, port)
    try:
        clock = FakeClock()
        proxy, said = searching(Fixed(Candidate(address, port, FQDN, "command line")), clock)
        proxy.authorities = lambda fqdn: host_authorities(kit.known_hosts, fqdn)
        proxy.ticket = Ticket("s", b"k" * 32, "boot")
        with pytest.raises(RelayFailure) as failed:
            await proxy.connect(600, 0)
        sentence = (
            f"the host at {address} is not signed by the fleet's host CA for {FQDN}: an "
            "impostor, or a stale address"
        )
        assert failed.value.cause == "impostor" and str(failed.value).startswith(sentence)
        assert said == [f"{sentence}; looking again while a migration could explain it"]
        assert clock.t - 1000.0 == pytest.approx(IMPOSTOR_WAIT)
        assert rogue.sessions == {}
    finally:
        await rogue.close()


@dataclass
class Forwarder:
    """A TCP path to the agent that can go silent: frozen links pass nothing either way and
    never close, as a dead route does; new connections pass."""

    port: int
    generation: list[int]

    def freeze(self) -> None:
        self.generation[0] += 1


@contextlib.asynccontextmanager
async def forwarder(agent: Agent) -> AsyncIterator[Forwarder]:
    tasks: set[asyncio.Task[None]] = set()
    generation = [0]
    writers: list[asyncio.StreamWriter] = []

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, mine: int) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await r.read(65536):
                if generation[0] != mine:
                    await asyncio.Event().wait()  # silence, forever
                w.write(data)
                await w.drain()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(agent.address, agent.port)
        writers.extend([writer, up_writer])
        mine = generation[0]
        for task in (pipe(reader, up_writer, mine), pipe(up_reader, writer, mine)):
            t = asyncio.create_task(task)
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    server = await asyncio.start_server(accepted, agent.address, 0)
    try:
        yield Forwarder(server.sockets[0].getsockname()[1], generation)
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in writers:
            w.close()


async def test_a_silent_path_is_noticed_and_the_session_resumes_at_once(
    kit: Kit, agent: Agent
) -> None:
    async with forwarder(agent) as path:
        via = Agent(agent.address, path.port, agent.server)
        async with proxy(kit, via, "--ping-every", "0.2", "--dead-after", "1") as p:
            await p.roundtrip(b"one\n")
            path.freeze()
            started = time.monotonic()
            await p.roundtrip(b"two\n")  # sent into the dead path, replayed on the new one
            assert time.monotonic() - started < 5
            assert p.out == b"one\ntwo\n"


async def test_a_proxy_whose_ssh_is_gone_stops_resuming(kit: Kit, agent: Agent) -> None:
    async with proxy(kit, agent) as p:
        await p.roundtrip(b"hello\n")
        await agent.server.close_listener()
        agent.server.reset_links()
        # ssh was killed: both of its pipe ends close.
        assert p.proc.stdin is not None
        p.proc.stdin.close()
        p.proc._transport.get_pipe_transport(1).close()  # type: ignore[attr-defined]
        async with asyncio.timeout(10):
            assert await p.proc.wait() == 1


class Unknown:
    """A locator that never finds an address (the fleet has none for it yet)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.asked: list[float] = []

    async def candidates(self, name: str) -> list[Candidate]:
        self.asked.append(self.clock.t)
        return []


async def test_with_no_address_the_proxy_looks_up_at_most_once_a_second() -> None:
    """Each lookup asks the fleet's API and DNS and tries handshakes: without an address to
    knock at, the 10 ms knocks of a blackout would be 40 to 100 lookups a second."""
    clock = FakeClock()
    locator = Unknown(clock)
    proxy, _ = searching(locator, clock)
    with pytest.raises(RelayFailure) as failed:
        await proxy.connect(10, 0)
    assert failed.value.cause == "unreachable"
    assert "no address for echo" in str(failed.value)
    gaps = [b - a for a, b in itertools.pairwise(locator.asked)]
    assert gaps and min(gaps) >= RESOLVE_EVERY, gaps
    assert len(locator.asked) <= 10 / RESOLVE_EVERY + 1


class Hung:
    """A locator whose lookup never ends (an API that accepts and never answers; a migration
    that outlasts the Finder's wait)."""

    async def candidates(self, name: str) -> list[Candidate]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_lookup_that_never_ends_is_cut_at_the_time_left() -> None:
    clock = FakeClock()
    proxy, _ = searching(Hung(), clock)
    started = time.monotonic()
    with pytest.raises(RelayFailure) as failed:
        await proxy.connect(0.5, 0)
    assert failed.value.cause == "unreachable"
    assert str(failed.value) == "cannot reach echo: looking echo up took all the time left"
    assert time.monotonic() - started < 5, "cut at the half second left, not held"
