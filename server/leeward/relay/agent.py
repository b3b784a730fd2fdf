"""The agent's relay endpoint: sessions that outlive their TCP connections.

Each session's inner byte stream goes to the in-process SSH server over a socketpair, never
through the environment's network attachment: a blackout resets the relay's TCP links, but the
SSH connection inside only waits. A session without a link is kept `keep_seconds`, then closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from leeward.relay import handshake
from leeward.relay.frames import ProtocolError
from leeward.relay.handshake import HandshakeRefused, HostIdentity
from leeward.relay.stream import MIB, Endpoint, RelayFailure

log = logging.getLogger("leeward.relay.agent")

InnerServer = Callable[[socket.socket], Awaitable[None]]
"""Runs the SSH server over one end of a socketpair (until the connection ends)."""


@dataclass(frozen=True)
class RelaySettings:
    buffer_bytes: int = 8 * MIB
    keep_seconds: float = 660.0
    """How long a session without a link is kept: longer than the proxy's resume deadline."""
    ping_every: float = 2.5
    dead_after: float = 10.0


@dataclass(eq=False)
class Session:
    id: str
    secret: bytes
    endpoint: Endpoint
    inner: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    expiry: asyncio.TimerHandle | None = None


def reset(transport: asyncio.BaseTransport) -> None:
    """Abort with a TCP reset (SO_LINGER 0), as a network that goes away does."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


class RelayServer:
    def __init__(
        self,
        identity: HostIdentity,
        fqdn: str,
        inner_server: InnerServer,
        settings: RelaySettings | None = None,
    ) -> None:
        self.identity = identity
        self.fqdn = fqdn
        self.settings = settings or RelaySettings()
        self.boot = secrets.token_hex(8)
        """New at every start of the agent: a proxy tells a restart from an expired session."""
        self._inner_server = inner_server
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.BaseTransport] = set()
        self.sessions: dict[str, Session] = {}
        self._handlers: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._accepted, host, port, reuse_address=True)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def links(self) -> int:
        """Open TCP connections to the relay (in a handshake or carrying a session)."""
        return len(self._links)

    def reset_links(self) -> int:
        links = list(self._links)
        for transport in links:
            reset(transport)
        return len(links)

    async def close(self) -> None:
        await self.close_listener()
        self.reset_links()
        for session in list(self.sessions.values()):
            self._end(session, "the agent stops")
        # Their links are reset: the handlers end by themselves (a cancelled one would be
        # logged by asyncio's stream callback as an error).
        handlers = set(self._handlers)
        if handlers:
            _, late = await asyncio.wait(handlers, timeout=3.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # -- links -------------------------------------------------------------------------

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._links.add(writer.transport)
        try:
            await self._link(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError) as exc:
            log.info("relay link ended: %s", exc or type(exc).__name__)
        except (ProtocolError, HandshakeRefused) as exc:
            log.info("relay link refused: %s", exc)
        except Exception:
            log.exception("relay link failed")
        finally:
            self._links.discard(writer.transport)
            self._handlers.discard(task)
            writer.transport.abort()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(handshake.HANDSHAKE_SECONDS):
            request = await handshake.agent_handshake(
                reader,
                writer,
                identity=self.identity,
                fqdn=self.fqdn,
                boot=self.boot,
                secret_of=lambda sid: s.secret if (s := self.sessions.get(sid)) else None,
            )
            if request.session is None:
                session = await self._open(request.secret)
            else:
                session = self.sessions[request.session]
            handshake.welcome(writer, request, session.id, session.endpoint.received)
            await writer.drain()
        if session.expiry is not None:
            session.expiry.cancel()
            session.expiry = None
        try:
            why = await session.endpoint.run_link(reader, writer, request.received)
        except RelayFailure as exc:
            self._end(session, str(exc))
            return
        if session.endpoint.finished.is_set():
            self._end(session, "finished")
            return
        if not session.endpoint.heard:
            # The proxy may never have had the WELCOME: it cannot resume what it does not
            # know. One that did finds the session gone, with nothing exchanged, and opens anew.
            self._end(session, f"its first link died before the proxy spoke ({why})")
            return
        log.info("relay session %s lost its link: %s", session.id, why)
        if not session.endpoint.linked and session.id in self.sessions:
            # Armed afresh at every loss: a replaced link's handler may get here after the
            # new link attached; `_expire` looks again before it ends anything.
            if session.expiry is not None:
                session.expiry.cancel()
            session.expiry = asyncio.get_running_loop().call_later(
                self.settings.keep_seconds, self._expire, session
            )

    def _expire(self, session: Session) -> None:
        if not session.endpoint.linked:
            self._end(session, f"no link for {self.settings.keep_seconds:g} s")

    async def _open(self, secret: bytes) -> Session:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)

        async def deliver(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        async def deliver_end() -> None:
            if writer.can_write_eof():
                writer.write_eof()

        s = self.settings
        endpoint = Endpoint(
            s.buffer_bytes, deliver, deliver_end, ping_every=s.ping_every, dead_after=s.dead_after
        )
        session = Session(secrets.token_hex(16), secret, endpoint, writer)
        self.sessions[session.id] = session

        async def pump() -> None:
            try:
                while data := await reader.read(65536):
                    await endpoint.send(data)
            except ConnectionError:
                pass
            endpoint.send_end()
            await endpoint.finished.wait()

        async def serve_inner() -> None:
            try:
                await self._inner_server(theirs)
            except Exception as exc:
                log.info("relayed SSH connection ended: %s", exc)
                writer.close()

        session.tasks.append(asyncio.create_task(pump(), name=f"relay-{session.id[:8]}"))
        session.tasks.append(asyncio.create_task(serve_inner()))
        log.info("relay session %s opened", session.id)
        return session

    def _end(self, session: Session, why: str) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        log.info("relay session %s closed: %s", session.id, why)
        if session.expiry is not None:
            session.expiry.cancel()
        session.endpoint.drop_link()
        session.inner.close()
        for task in session.tasks:
            if task is not asyncio.current_task():
                task.cancel()
