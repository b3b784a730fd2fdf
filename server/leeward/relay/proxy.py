"""`leeward proxy ENV`: ssh's ProxyCommand. Carries ssh's bytes to the environment's agent over
the resumable relay, so the SSH session inside rides through TCP resets, migrations and
address changes shorter than the resume deadline.

It starts once per SSH connection: only the standard library, cryptography and (for the host
certificate) asyncssh are imported. When the session cannot go on it prints one line on
stderr saying why, and exits without writing any byte that was not the stream's next.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leeward.client.refusals import LocateError
from leeward.common.backoff import Backoff
from leeward.common.clock import Clock, SystemClock
from leeward.common.files import write_atomic
from leeward.relay.candidates import Candidate, Fixed, Located, Locator
from leeward.relay.frames import ProtocolError
from leeward.relay.handshake import (
    HANDSHAKE_SECONDS,
    HandshakeRefused,
    Ticket,
    Welcomed,
    client_handshake,
    host_authorities,
)
from leeward.relay.stream import MIB, Endpoint, RelayFailure

CONNECT_SECONDS = 5.0

FAST_RETRY_SECONDS = 1.0
"""For this long after a drop, connects are retried every 10 to 25 ms; then backoff."""

IMPOSTOR_WAIT = 5.0
"""How long the proxy keeps looking once a host that is not the environment answered at the
only address found, when the fleet cannot say whether the environment is migrating (its API
down, hung or refusing the token; or an address given on the command line, on a resume). A
live migration's blackout is a fraction of a second (the fleet's `migration_blackout_seconds`,
0.3 s by default): this covers it many times over, and ssh still ends while its user watches.
When the fleet answers, its word decides: while it says migrating, the Finder waits out the
blackout (`leeward.client.locate.MIGRATING_WAIT`); any other state ends it at once."""

REPORT_SECONDS = 5.0
"""How often the session file gets the round trip (and DNS, while down, is asked again)."""

RESOLVE_EVERY = 1.0
"""While retrying, the environment's address is looked up again at most this often (each
lookup asks the fleet)."""


@dataclass(frozen=True)
class ProxySettings:
    buffer_bytes: int = 8 * MIB
    deadline: float = 600.0
    """How long to keep trying to resume after a link died."""
    first_connect: float = 20.0
    """How long the first connection may take (the Finder itself waits out a migration's
    blackout: `leeward.client.locate.MIGRATING_WAIT`)."""
    ping_every: float = 2.5
    dead_after: float = 10.0


def _span(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


class Status:
    """A small JSON file per session for the daemon: state, rtt, address source. Replaced
    atomically; removed on exit."""

    def __init__(self, directory: Path | None, name: str) -> None:
        self.path = directory / f"{os.getpid()}.json" if directory is not None else None
        self.fields: dict[str, Any] = {"env": name, "pid": os.getpid(), "state": "connecting"}

    def update(self, **fields: Any) -> None:
        self.fields.update(fields, updated=time.time())
        if self.path is None:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(self.fields), durable=False)

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class Impostors:
    """Who answered instead of the environment while the proxy looks for it: each sentence
    said once, at once, on the stderr that ssh shows (not after the whole wait), and when the
    first was seen, which the bound (`IMPOSTOR_WAIT`) counts from."""

    def __init__(self, clock: Clock, say: Callable[[str], None]) -> None:
        self.clock = clock
        self.say = say
        self.first: str | None = None
        self.since: float | None = None
        self._said: set[str] = set()

    def seen(self, sentence: str) -> None:
        if self.since is None:
            self.first, self.since = sentence, self.clock.monotonic()
        if sentence not in self._said:
            self._said.add(sentence)
            self.say(f"{sentence}; looking again while a migration could explain it")

    def left(self) -> float:
        """Seconds of the bound left (it counts from the first sighting)."""
        if self.since is None:
            return IMPOSTOR_WAIT
        return max(self.since + IMPOSTOR_WAIT - self.clock.monotonic(), 0.0)

    def waited_out(self) -> str | None:
        """The first sentence, once the bound has passed since it was seen."""
        return self.first if self.since is not None and self.left() <= 0 else None

    def reset(self) -> None:
        """A new search (the first connect, or a resume): nothing seen yet."""
        self.first = self.since = None
        self._said.clear()


class Proxy:
    def __init__(
        self,
        name: str,
        locator: Locator,
        authorities: Callable[[str], list[bytes]],
        settings: ProxySettings,
        *,
        clock: Clock | None = None,
        status: Status | None = None,
        impostors: Impostors | None = None,
    ) -> None:
        self.name = name
        self.locator = locator
        self.authorities = authorities
        self.settings = settings
        self.clock = clock or SystemClock()
        self.status = status or Status(None, name)
        self.impostors = impostors or Impostors(self.clock, lambda line: _say(name, line))
        self.ticket: Ticket | None = None
        self.endpoint: Endpoint | None = None
        self._abandoned: Callable[[], bool] = lambda: False

    async def _try(
        self, candidate: Candidate, received: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Welcomed]:
        async with asyncio.timeout(CONNECT_SECONDS):
            reader, writer = await asyncio.open_connection(candidate.address, candidate.relay_port)
        try:
            async with asyncio.timeout(HANDSHAKE_SECONDS):
                welcomed = await client_handshake(
                    reader,
                    writer,
                    fqdn=candidate.fqdn,
                    authorities=self.authorities(candidate.fqdn),
                    resume=self.ticket,
                    received=received,
                )
        except BaseException:
            writer.transport.abort()
            raise
        self.status.update(state="connected", source=candidate.source, address=candidate.address)
        return reader, writer, welcomed

    def _refusal(self, exc: HandshakeRefused) -> RelayFailure | None:
        """A refusal that ends the session (None: try elsewhere)."""
        if self.ticket is not None and exc.reason == "unknown-session":
            if exc.boot is not None and exc.boot != self.ticket.boot:
                return RelayFailure(
                    "restarted",
                    "the environment's agent restarted, or the environment moved to a new "
                    f"devserver (`leeward show {self.name}` says which): the session cannot be "
                    "resumed; reconnect",
                )
            return RelayFailure(
                "expired", "the agent no longer has this session (it expired); reconnect"
            )
        if exc.reason == "bad-proof":
            return RelayFailure("refused", f"the resume proof was refused: {exc}")
        return None

    def _impostor(self, sentence: str, fleet_state: str | None) -> RelayFailure:
        """The end of the search: only a host that is not the environment answers, and no
        real one can be expected there any more."""
        name = self.name
        if fleet_state == "migrating":
            why = (
                f"{name} was migrating, and no host signed for it answered there within the "
                f"migration's wait; try again (`leeward locate {name}`), or report it to the "
                "fleet's operators"
            )
        elif fleet_state is not None:
            why = f"the fleet says {name} is {fleet_state}; report it to the fleet's operators"
        else:
            why = (
                f"still so after {_span(IMPOSTOR_WAIT)}, and the fleet cannot say whether {name} "
                f"moved; try again when it answers (`leeward locate {name}`)"
            )
        return RelayFailure("impostor", f"{sentence}; {why}")

    async def connect(
        self, within: float, received: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Welcomed]:
        """Connect (or resume) through any candidate, retrying with backoff for `within` s;
        when only impostors answer, until the fleet's word or `IMPOSTOR_WAIT` ends it."""
        start = self.clock.monotonic()
        self.impostors.reset()
        knock = Backoff(base=0.025, cap=0.025, jitter=(0.4, 1.0))  # every 10 to 25 ms
        backoff = Backoff(base=0.1, cap=2.0)
        last = "no address yet"
        candidates: list[Candidate] = []
        resolved_at = float("-inf")
        woken = False
        while True:
            if self._abandoned():
                raise RelayFailure("local", "ssh went away")
            if self.clock.monotonic() - resolved_at >= RESOLVE_EVERY:
                # A lookup (a hung API, the Finder's wait for a migration) may not hold the
                # search past its time, nor, once an impostor was seen, past the bound.
                limit = within - (self.clock.monotonic() - start)
                if self.impostors.since is not None:
                    limit = min(limit, self.impostors.left())
                try:
                    async with asyncio.timeout(max(limit, 0.0)):
                        candidates = await self.locator.candidates(self.name)
                    if not candidates:
                        last = f"no address for {self.name}"
                except TimeoutError:
                    candidates = []
                    last = f"looking {self.name} up took all the time left"
                except LocateError as exc:
                    candidates, last = [], str(exc)
                    if exc.gone:  # the fleet's word: no environment by that name
                        raise RelayFailure("gone", str(exc)) from None
                    if exc.fleet_state == "stopped" and self.ticket is None and not woken:
                        # Stopped for being idle: this connection starts it again. The wait
                        # for it is the wake's own (with its deadline); the connect's starts after.
                        woken = True
                        await self._wake()
                        start, resolved_at = self.clock.monotonic(), float("-inf")
                        continue
                    if exc.impostor is not None:
                        if exc.fleet_state is not None:  # the fleet's word: nothing else comes
                            raise self._impostor(exc.impostor, exc.fleet_state) from None
                        self.impostors.seen(exc.impostor)
                except Exception as exc:
                    candidates, last = [], str(exc) or type(exc).__name__
                resolved_at = self.clock.monotonic()
            refusals: list[str] = []
            rogues: list[str] = []
            for candidate in candidates:
                try:
                    return await self._try(candidate, received)
                except HandshakeRefused as exc:
                    endpoint = self.endpoint
                    if (
                        exc.reason == "unknown-session"
                        and endpoint is not None
                        and endpoint.untouched
                    ):
                        # Lost before anything was exchanged: a new session replays all.
                        self.ticket = None
                        last = "the session was lost before it carried anything; opening anew"
                        continue
                    fatal = self._refusal(exc)
                    if fatal is not None:
                        raise fatal from None
                    if exc.reason == "rogue":  # the sentence names the host
                        rogues.append(str(exc))
                        refusals.append(str(exc))
                    else:
                        refusals.append(f"{candidate.address} ({candidate.source}): {exc}")
                    last = refusals[-1]
                except (OSError, TimeoutError, ProtocolError, asyncio.IncompleteReadError) as exc:
                    last = f"{candidate.address}:{candidate.relay_port} ({candidate.source}): " + (
                        str(exc) or type(exc).__name__
                    )
            if self.ticket is None and candidates and len(refusals) == len(candidates):
                raise RelayFailure("refused", refusals[0])
            for sentence in rogues:
                self.impostors.seen(sentence)
            if (waited_out := self.impostors.waited_out()) is not None:
                raise self._impostor(waited_out, None)
            elapsed = self.clock.monotonic() - start
            if elapsed >= within:
                if self.ticket is None:
                    raise RelayFailure("unreachable", f"cannot reach {self.name}: {last}")
                raise RelayFailure(
                    "deadline", f"could not resume within {_span(self.settings.deadline)}: {last}"
                )
            # A drop is most often a blackout (a live migration): a fraction of a second of
            # closed listener. Knock again at once, so the session is back within tens of
            # milliseconds of the path; a refused connect costs nothing.
            # Not for an impostor, though: it answers every knock the same. And with no
            # address to knock at, the next lookup (the fleet's API, its DNS, handshakes) is
            # not due before RESOLVE_EVERY.
            fast = elapsed < FAST_RETRY_SECONDS and self.impostors.since is None
            pause = knock.next() if fast and candidates else backoff.next()
            if not candidates:
                pause = max(pause, resolved_at + RESOLVE_EVERY - self.clock.monotonic())
            if self.impostors.since is not None:
                pause = min(pause, self.impostors.left())
            await self.clock.sleep(min(pause, within - elapsed))

    async def _wake(self) -> None:
        """Have the fleet start the environment (stopped for being idle) and wait until it
        runs, saying so on ssh's stderr; a locator that cannot (an address given on the
        command line) leaves the search to fail as it would."""
        from leeward.client.wake import WakeError

        wake = getattr(self.locator, "wake", None)
        if wake is None:
            return
        self.status.update(state="starting")
        try:
            await wake(self.name, lambda line: _say(self.name, line))
        except WakeError as exc:
            raise RelayFailure("stopped", str(exc)) from None
        except (OSError, TimeoutError) as exc:
            raise RelayFailure(
                "stopped",
                f"{self.name} is stopped for being idle, and the fleet could not be asked to "
                f"start it ({exc or type(exc).__name__}); try `leeward start {self.name}`",
            ) from None

    async def run(self, stdin: asyncio.StreamReader, stdout: asyncio.StreamWriter) -> int:
        async def deliver(data: bytes) -> None:
            try:
                stdout.write(data)
                await stdout.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise RelayFailure("local", f"ssh went away: {exc}") from None

        async def deliver_end() -> None:
            with contextlib.suppress(ConnectionError, RuntimeError, OSError):
                if stdout.can_write_eof():
                    stdout.write_eof()
                else:
                    stdout.close()

        self.status.update(state="connecting")
        s = self.settings
        endpoint = Endpoint(
            s.buffer_bytes, deliver, deliver_end, ping_every=s.ping_every, dead_after=s.dead_after
        )
        self.endpoint = endpoint
        reader, writer, welcomed = await self.connect(s.first_connect, 0)
        self.ticket = welcomed.ticket

        async def pump() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await stdin.read(65536):
                    await endpoint.send(data)
            endpoint.send_end()

        pumping = asyncio.create_task(pump())
        transport = getattr(stdout, "transport", None)
        # ssh killed: its end of both pipes is closed; nobody is left to resume for.
        self._abandoned = lambda: (
            pumping.done() and transport is not None and transport.is_closing()
        )
        reporting = asyncio.create_task(self._report(endpoint))
        resumes = 0
        try:
            while True:
                why = await endpoint.run_link(reader, writer, welcomed.peer_received)
                if endpoint.finished.is_set():
                    return 0
                lost = self.clock.monotonic()
                self.status.update(state="resuming", reason=why)
                reader, writer, welcomed = await self.connect(s.deadline, endpoint.received)
                self.ticket = welcomed.ticket  # a new one if the session had to be opened anew
                # Counted, so that the daemon shows a blackout shorter than its own glance.
                resumes += 1
                blackout = round((self.clock.monotonic() - lost) * 1000, 1)
                self.status.update(
                    resumes=resumes, blackout_ms=blackout, resumed_after=why, resumed_at=time.time()
                )
        finally:
            pumping.cancel()
            reporting.cancel()
            await asyncio.gather(pumping, reporting, return_exceptions=True)

    async def _report(self, endpoint: Endpoint) -> None:
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            if endpoint.linked:
                self.status.update(rtt=endpoint.rtt)
            if self.status.fields.get("dns") == "down" and isinstance(self.locator, Located):
                # Found while DNS was down: ask it again, so that "DNS bypass" ends with the
                # outage, not at the next resume.
                self.locator.recheck_dns()


def _say(name: str, line: str) -> None:
    """A line for the person at ssh: ssh shows its ProxyCommand's stderr as it comes."""
    print(f"leeward proxy: {name}: {line}", file=sys.stderr, flush=True)


async def _stdio() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0)
    )
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(1, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return reader, writer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leeward proxy",
        description="ssh's ProxyCommand: reach an environment over the resumable relay.",
    )
    parser.add_argument("name", help="the environment's name, id or fully qualified name")
    parser.add_argument("--address", help="the agent's address (skips the fleet)")
    parser.add_argument("--port", type=int, help="the relay's port (with --address)")
    parser.add_argument("--fqdn", help="the name its host certificate must carry")
    parser.add_argument("--known-hosts", type=Path, help="with the fleet's @cert-authority line")
    parser.add_argument("--buffer-mib", type=float, default=8, help="replay buffer (default 8)")
    parser.add_argument(
        "--deadline", type=float, default=600, help="seconds to keep resuming (default 600)"
    )
    parser.add_argument("--ping-every", type=float, default=2.5, help=argparse.SUPPRESS)
    parser.add_argument("--dead-after", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--no-status", action="store_true", help="write no session status file")
    return parser


async def _main(args: argparse.Namespace) -> int:
    from leeward.client.paths import Paths

    paths = Paths.default()
    known_hosts = args.known_hosts or paths.known_hosts
    status = Status(None if args.no_status else paths.state_dir / "sessions", args.name)
    clock = SystemClock()
    impostors = Impostors(clock, lambda line: _say(args.name, line))
    locator: Locator
    if args.address:
        if not args.port:
            raise RelayFailure("usage", "--address needs --port")
        fqdn = args.fqdn or args.name
        locator = Fixed(Candidate(args.address, args.port, fqdn, "command line"))
    else:
        from leeward.client.credentials import CredentialsError, load_credentials

        try:
            creds = load_credentials(paths.credentials)
        except CredentialsError as exc:
            raise RelayFailure("unreachable", f"{exc} (or give --address and --port)") from None
        # The API, DNS and the last-known-good cache raced (leeward.client.locate).
        locator = Located(
            creds.fleet,
            creds.token,
            paths.state_dir,
            known_hosts,
            lambda dns: status.update(dns=dns),
            impostors.seen,  # said at once, while the fleet's answer is awaited
        )
    settings = ProxySettings(
        buffer_bytes=max(1, int(args.buffer_mib * MIB)),
        deadline=args.deadline,
        ping_every=args.ping_every,
        dead_after=args.dead_after,
    )
    proxy = Proxy(
        args.name,
        locator,
        lambda fqdn: host_authorities(known_hosts, fqdn),
        settings,
        clock=clock,
        status=status,
        impostors=impostors,
    )
    # ssh ends its ProxyCommand with SIGHUP: leave cleanly, status file and all.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        stdin, stdout = await _stdio()
        return await proxy.run(stdin, stdout)
    except asyncio.CancelledError:
        return 0
    except RelayFailure as exc:
        status.update(state="failed", reason=str(exc))
        if exc.cause == "local":
            return 1
        raise
    finally:
        status.remove()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except RelayFailure as exc:
        _say(args.name, str(exc))
        return 255
    except KeyboardInterrupt:
        return 130
