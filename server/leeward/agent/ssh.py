"""The environment's SSH server: what OpenSSH clients, scp, rsync and Remote-SSH talk to.

Only user certificates from the fleet's user CA, for the environment's owner, get in. Shells
get a real PTY with a controlling terminal; commands without a PTY get pipes, as with sshd. Every
session runs in the environment's place (`leeward.agent.place`): its sandbox, where the image's
sftp-server serves SFTP too; or, without sandboxes, the host, where asyncssh's SFTP server does,
rooted at the agent's working directory, the environment's home.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from leeward.agent.activity import LastInput, runs_editor_server
from leeward.agent.place import Place, Sandboxed, login_environment, set_window
from leeward.agent.sftp import HomeSFTP, SubsystemProcess

log = logging.getLogger("leeward.agent.ssh")

_PASSED_ENV = ("LANG", "LANGUAGE", "TZ", "COLORTERM")
"""Client environment that is passed on, besides LC_*: what OpenSSH's AcceptEnv usually has."""


@dataclass(frozen=True)
class Trust:
    """Whom the server lets in: the owner's certificates signed by the user CA."""

    owner: str | None
    user_ca: str

    def authorized_keys(self, username: str) -> asyncssh.SSHAuthorizedKeys | None:
        if self.owner is None or username != self.owner:
            return None
        # principals= makes asyncssh require the owner among the certificate's principals (a
        # certificate without principals does not match) instead of accepting any.
        line = f'cert-authority,principals="{self.owner}" {self.user_ca.strip()}\n'
        return asyncssh.import_authorized_keys(line)


@dataclass(frozen=True)
class Login:
    """How sessions run: where (the place: the sandbox or the host), and the base environment."""

    place: Place
    environment_id: str
    fqdn: str
    banner: Callable[[], Awaitable[bytes]] | None = None
    """What an interactive login prints before its shell (leeward.agent.banner)."""

    @property
    def shell(self) -> str:
        return self.place.shell

    def environment(self, process: asyncssh.SSHServerProcess[bytes]) -> dict[str, str]:
        env = {
            **login_environment(self.place),
            "LEEWARD_ENVIRONMENT_ID": self.environment_id,
            "LEEWARD_ENVIRONMENT": self.fqdn,
        }
        for key, value in _client_env(process).items():
            if key in _PASSED_ENV or key.startswith("LC_"):
                env[key] = value
        peer = process.get_extra_info("peername") or ("", 0)
        sock = process.get_extra_info("sockname") or ("", 0)
        env["SSH_CLIENT"] = f"{peer[0]} {peer[1]} {sock[1]}"
        env["SSH_CONNECTION"] = f"{peer[0]} {peer[1]} {sock[0]} {sock[1]}"
        if process.term_type is not None:
            env["TERM"] = process.term_type or "xterm"
        return env


def _client_env(process: asyncssh.SSHServerProcess[bytes]) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in process.env.items():
        k = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
        v = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        if "\0" not in k + v and "=" not in k:
            result[k] = v
    return result


async def _wait_exit(popen: subprocess.Popen[bytes]) -> int:
    """Wait for a child without a thread: a pidfd becomes readable when the child exits."""
    import asyncio

    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(popen.pid)
    except OSError:  # pragma: no cover - kernels before 5.3
        return await loop.run_in_executor(None, popen.wait)
    done: asyncio.Future[None] = loop.create_future()

    def exited() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, exited)
    try:
        await done
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return popen.wait()


def _spawn(
    argv: list[str],
    stdio: tuple[int, int, int],
    cwd: Path,
    env: dict[str, str],
    *,
    new_session: bool,
) -> subprocess.Popen[bytes]:
    # fork and exec only: quick enough to do on the event loop, and no watcher thread.
    return subprocess.Popen(
        argv,
        stdin=stdio[0],
        stdout=stdio[1],
        stderr=stdio[2],
        cwd=cwd,
        env=env,
        start_new_session=new_session,
    )


def _hang_up(popen: subprocess.Popen[bytes]) -> None:
    """The client went away: hang up the session's process group, as sshd does."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGHUP)


async def _ready(fd: int, *, write: bool) -> None:
    """Wait until `fd` is readable (or writable): the event loop watches it meanwhile."""
    import asyncio

    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def _fd_to_channel(fd: int, writer: asyncssh.SSHWriter[bytes]) -> None:
    """Copy a pipe or PTY to the channel until it ends; backpressure through drain()."""
    import errno

    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            await _ready(fd, write=False)
            continue
        except OSError as exc:
            if exc.errno == errno.EIO:  # a PTY whose last slave descriptor closed
                return
            raise
        if not data:
            return
        writer.write(data)
        await writer.drain()


async def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await _ready(fd, write=True)


class _Stdio:
    """The descriptors of one session on our side, closed once."""

    def __init__(self, *fds: int) -> None:
        self.fds = list(fds)
        for fd in fds:
            os.set_blocking(fd, False)

    def close(self, fd: int) -> None:
        if fd in self.fds:
            self.fds.remove(fd)
            os.close(fd)

    def close_all(self) -> None:
        for fd in list(self.fds):
            self.close(fd)


class Sessions:
    """Runs shells and commands for SSH channels (asyncssh's process_factory).

    The copying between channel and descriptors is done here rather than with
    `process.redirect`: it keeps stdout and stderr apart until both end, ends the command's
    stdin only after all input was written, and reports signals and window changes."""

    def __init__(
        self, login: Callable[[], Login], registry: ConnectionRegistry | None = None
    ) -> None:
        self._login = login
        self._registry = registry

    async def __call__(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        import asyncio

        popen: subprocess.Popen[bytes] | None = None
        stdio = _Stdio()
        tasks: list[asyncio.Task[None]] = []
        try:
            login = self._login()
            if self._registry is not None and runs_editor_server(process.command):
                self._registry.mark_editor(process.get_extra_info("connection"))
            sftp = process.subsystem == "sftp" and isinstance(login.place, Sandboxed)
            if process.subsystem and not sftp:
                process.stderr.write(f"subsystem {process.subsystem} is not served\r\n".encode())
                process.exit(1)
                return
            pty = process.term_type is not None and not sftp
            if pty and not process.command and login.banner is not None:
                # A login shell only, as sshd's motd: commands, scp and sftp stay byte-clean.
                process.stdout.write(await login.banner())
            if pty:
                popen, stdio, outputs, stdin_fd = self._start_in_pty(process, login)
            else:
                popen, stdio, outputs, stdin_fd = self._start_with_pipes(process, login)
            place = login.place
            tasks.append(
                asyncio.create_task(self._copy_input(process, popen, place, stdio, stdin_fd, pty))
            )
            copies = [asyncio.create_task(_fd_to_channel(fd, w)) for fd, w in outputs]
            tasks.extend(copies)
            exited = asyncio.create_task(_wait_exit(popen))
            closed = asyncio.create_task(process.channel.wait_closed())
            tasks.extend([exited, closed])  # type: ignore[list-item]
            await asyncio.wait({exited, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                log.info("client went away; hanging up pid %d", popen.pid)
                return
            status = exited.result()
            if pty:
                # Background jobs may hold the PTY open; what the shell wrote is buffered.
                await asyncio.wait(copies, timeout=2.0)
            else:
                # Like sshd: the output ends when the pipes close, not when the command exits.
                await asyncio.wait({*copies, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not all(c.done() for c in copies):
                    await asyncio.wait(copies)
            for copy in copies:
                if copy.done() and not copy.cancelled() and copy.exception():
                    raise copy.exception()  # type: ignore[misc]
            if status < 0:
                process.exit_with_signal(signal.Signals(-status).name.removeprefix("SIG"))
            else:
                process.exit(status)
        except (asyncssh.Error, BrokenPipeError, ConnectionError) as exc:
            log.info("session ended by the client: %s", exc)
        except Exception as exc:
            log.exception("session failed")
            with contextlib.suppress(Exception):
                process.stderr.write(f"leeward agent: {exc}\r\n".encode())
                process.exit(255)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
            stdio.close_all()
            if popen is not None:
                _hang_up(popen)

    async def _copy_input(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        popen: subprocess.Popen[bytes],
        place: Place,
        stdio: _Stdio,
        fd: int,
        pty: bool,
    ) -> None:
        while True:
            try:
                data = await process.stdin.read(65536)
            except asyncssh.TerminalSizeChanged as change:
                if pty:  # the kernel tells the foreground job (SIGWINCH)
                    set_window(fd, change.height, change.width)
                continue
            except asyncssh.BreakReceived:
                _signal(popen, place, "INT")
                continue
            except asyncssh.SignalReceived as received:
                _signal(popen, place, received.signal)
                continue
            if not data:
                break
            if self._registry is not None:
                self._registry.last_input.note()
            try:
                await _write_fd(fd, data)
            except OSError:  # the command stopped reading; the rest of the input is dropped
                break
        if not pty:
            stdio.close(fd)  # EOF for the command

    def _start_with_pipes(
        self, process: asyncssh.SSHServerProcess[bytes], login: Login
    ) -> tuple[subprocess.Popen[bytes], _Stdio, list[tuple[int, Any]], int]:
        place = login.place
        if process.subsystem == "sftp" and isinstance(place, Sandboxed):
            argv = place.sftp_server()
        else:
            shell = place.shell
            argv = place.argv([shell, "-c", process.command] if process.command else [shell, "-l"])
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            env = login.environment(process)
            popen = _spawn(argv, (in_r, out_w, err_w), place.cwd(), env, new_session=True)
        except BaseException:
            for fd in (in_w, out_r, err_r):
                os.close(fd)
            raise
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        log.info("exec pid %d: %s", popen.pid, _describe(process))
        stdio = _Stdio(in_w, out_r, err_r)
        return popen, stdio, [(out_r, process.stdout), (err_r, process.stderr)], in_w

    def _start_in_pty(
        self, process: asyncssh.SSHServerProcess[bytes], login: Login
    ) -> tuple[subprocess.Popen[bytes], _Stdio, list[tuple[int, Any]], int]:
        place = login.place
        master, slave, tty = place.open_pty()
        try:
            cols, rows, px_w, px_h = process.term_size
            if cols and rows:
                set_window(slave, rows, cols, px_w, px_h)
            env = login.environment(process)
            env["SSH_TTY"] = tty
            popen = _spawn(
                place.shell_in_pty(process.command),
                (slave, slave, slave),
                place.cwd(),
                env,
                # Direct: login_tty makes the session, with the PTY as its terminal. Sandboxed:
                # setsid inside does, and a group of its own here keeps signals off the agent.
                new_session=place.sandboxed,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        log.info("pty pid %d: %s", popen.pid, _describe(process))
        return popen, _Stdio(master), [(master, process.stdout)], master


def _signal(popen: subprocess.Popen[bytes], place: Place, name: str) -> None:
    sig = getattr(signal, f"SIG{name}", None)
    if isinstance(sig, signal.Signals) and popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(place.signal_target(popen.pid), sig)


def _describe(process: asyncssh.SSHServerProcess[bytes]) -> str:
    return repr(process.command[:200]) if process.command else "login shell"


class Connection(asyncssh.SSHServer):
    """One SSH connection's policy: certificate auth for the owner, local forwarding only."""

    def __init__(
        self,
        registry: ConnectionRegistry,
        *,
        relayed: bool = False,
        sessions: Sessions | None = None,
        login: Callable[[], Login] | None = None,
    ) -> None:
        self._registry = registry
        self.relayed = relayed
        self._sessions = sessions
        self._login = login
        self._conn: asyncssh.SSHServerConnection | None = None
        self._trust = registry.trust()
        self.authenticated = False
        self.editor = False
        """Whether it looks like VS Code's: it ran VS Code's server, or forwarded a port."""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._registry.opened(self, conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.closed(self)

    def begin_auth(self, username: str) -> bool:
        assert self._conn is not None
        keys = self._trust.authorized_keys(username)
        if keys is None:
            who = "nobody (warm)" if self._trust.owner is None else self._trust.owner
            log.info("refusing user %r: this environment serves %s", username, who)
        self._conn.set_authorized_keys(keys)
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        return False

    def session_requested(self) -> asyncssh.SSHServerSession[bytes] | bool:
        # Asked only when the options carry no process factory: in a sandbox (see _options).
        if self._sessions is None:
            return False
        return SubsystemProcess(self._sessions, None, 0, False)

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def auth_completed(self) -> None:
        self.authenticated = True
        assert self._conn is not None
        log.info(
            "user %s connected from %s",
            self._conn.get_extra_info("username"),
            (self._conn.get_extra_info("peername") or ("?",))[0],
        )

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool | Awaitable[Any]:
        # direct-tcpip (ssh -L, Remote-SSH): from the environment's network (its sandbox's, or
        # the host's, where asyncssh opens the connection itself).
        log.info("forwarding to %s:%d", dest_host, dest_port)
        self.editor = True  # Remote-SSH reaches its server through a forwarded port
        if self._login is None:
            return True
        return self._login().place.forward(dest_host, dest_port)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False


class ConnectionRegistry:
    """The live connections and the trust that new ones get."""

    def __init__(self, trust: Trust) -> None:
        self._trust = trust
        self._open: dict[Connection, asyncssh.SSHServerConnection] = {}
        self.last_input = LastInput()

    def mark_editor(self, conn: object) -> None:
        """The connection `conn` ran VS Code's server: it is an editor's."""
        for server, open_conn in self._open.items():
            if open_conn is conn:
                server.editor = True

    @property
    def editor_sessions(self) -> int:
        return sum(1 for s in self._open if s.authenticated and s.editor)

    def trust(self) -> Trust:
        return self._trust

    def set_trust(self, trust: Trust) -> None:
        self._trust = trust

    def opened(self, server: Connection, conn: asyncssh.SSHServerConnection) -> None:
        self._open[server] = conn

    def closed(self, server: Connection) -> None:
        self._open.pop(server, None)

    def reset_direct(self) -> int:
        """Reset every connection that came over the network (not through the relay)."""
        import socket
        import struct

        direct = [conn for server, conn in self._open.items() if not server.relayed]
        for conn in direct:
            sock = conn.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: close sends a reset, as a vanished network does
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.abort()
        return len(direct)

    @property
    def sessions(self) -> int:
        return sum(1 for s in self._open if s.authenticated)

    async def close_all(self, grace: float = 5.0) -> None:
        import asyncio

        conns = list(self._open.values())
        for conn in conns:
            conn.close()
        if conns:
            await asyncio.wait(
                [asyncio.ensure_future(c.wait_closed()) for c in conns], timeout=grace
            )


def host_keys(host_key: str, host_certificate: str) -> list[tuple[Any, Any]]:
    """The server_host_keys argument: the key presented together with its certificate."""
    key = asyncssh.import_private_key(host_key)
    cert = asyncssh.import_certificate(host_certificate)
    if cert.key.public_data != key.public_data:
        raise ValueError("the host certificate is not for the host key")
    return [(key, cert)]


def _options(
    registry: ConnectionRegistry,
    keys: list[tuple[Any, Any]],
    login: Callable[[], Login],
    *,
    relayed: bool,
    sftp_inside: bool,
) -> dict[str, Any]:
    """The same server and trust for direct and relayed connections. A relayed connection has no
    keepalive of its own: the relay watches its links and keeps the session through outages."""
    sessions = Sessions(login, registry)
    return {
        # In a sandbox, the image's sftp-server runs inside it (a session like any other, which
        # the connection makes: see SubsystemProcess); on the host, asyncssh's SFTP server,
        # rooted at the home.
        "server_factory": lambda: Connection(
            registry, relayed=relayed, sessions=sessions if sftp_inside else None, login=login
        ),
        "server_host_keys": keys,
        "process_factory": None if sftp_inside else sessions,
        "encoding": None,
        "sftp_factory": None if sftp_inside else HomeSFTP,
        "allow_scp": False,  # the environment's own scp binary serves `scp -O`, as under sshd
        "line_editor": False,
        "agent_forwarding": False,
        "x11_forwarding": False,
        "password_auth": False,
        "kbdint_auth": False,
        "login_timeout": 30,
        "keepalive_interval": 0 if relayed else 15,
        "keepalive_count_max": 4,
    }


async def listen(
    address: str,
    port: int,
    registry: ConnectionRegistry,
    keys: list[tuple[Any, Any]],
    login: Callable[[], Login],
    *,
    sftp_inside: bool,
) -> asyncssh.SSHAcceptor:
    options = _options(registry, keys, login, relayed=False, sftp_inside=sftp_inside)
    return await asyncssh.listen(address, port, reuse_address=True, **options)


async def serve_relayed(
    sock: Any,
    registry: ConnectionRegistry,
    keys: list[tuple[Any, Any]],
    login: Callable[[], Login],
    *,
    sftp_inside: bool,
) -> None:
    """One SSH connection over a connected socket from the relay, until it ends."""
    options = _options(registry, keys, login, relayed=True, sftp_inside=sftp_inside)
    conn = await asyncssh.run_server(sock, **options)
    await conn.wait_closed()
