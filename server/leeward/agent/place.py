"""Where an environment's processes run: in its sandbox (`Sandboxed`), or, where the host cannot
make sandboxes, as the agent's own user on the host (`Direct`, one user only: see
docs/operator.md).

A place turns what a session asks for (a shell, a command, the SFTP server, a setup script) into
the argv, working directory, pty and environment to start it with; and says where the agent
itself reaches the home for its own file work (the profile sync, setup files and logs).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pwd
import struct
import sys
import termios
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from leeward.common.threads import in_thread
from leeward.sandbox.sandbox import SFTP_SERVER, Running, connect_inside, leader

# Runs in the child between fork and the shell (Direct only): a new session whose controlling
# terminal is the PTY on fd 0, so job control, Ctrl-C and SIGHUP on hangup work as under sshd.
# Python ignores SIGPIPE and SIGXFSZ; the shell must not inherit that.
_LOGIN_TTY = (
    "import os,sys,signal as s;os.login_tty(0);"
    "[s.signal(n,s.SIG_DFL) for n in (s.SIGPIPE,s.SIGXFSZ)];"
    "os.execv(sys.argv[1],sys.argv[2:])"
)
_TIOCGPTN = 0x80045430
FORWARD_SECONDS = 10.0
"""How long a forwarded connection may take to connect inside the sandbox."""


class Place(Protocol):
    home: Path
    """Where the agent reaches the home for its own file work."""
    user: str
    shell: str
    sandboxed: bool

    @property
    def login_home(self) -> str:
        """HOME as the environment's processes see it."""
        ...

    def argv(self, argv: list[str]) -> list[str]:
        """What to start for `argv` (which is as the environment sees it)."""
        ...

    def cwd(self) -> Path:
        """The working directory to start it in."""
        ...

    def path(self) -> str:
        """PATH for the environment's processes."""
        ...

    def shell_in_pty(self, command: str | None) -> list[str]:
        """The argv of a shell (login, or `-c command`) whose controlling terminal is fd 0."""
        ...

    def open_pty(self) -> tuple[int, int, str]:
        """A master for the agent, a slave for the session, and the slave's name inside."""
        ...

    def signal_target(self, pid: int) -> int:
        """The process to signal for a session started as `pid`."""
        ...

    def forward(self, host: str, port: int) -> bool | Awaitable[Any]:
        """A direct-tcpip request (`ssh -L`, Remote-SSH): True for asyncssh to connect from
        the agent's network, or a coroutine that connects from the environment's own."""
        ...


@dataclass
class Direct:
    """Processes run as the agent's user, in the home on the host, with the agent's PATH."""

    home: Path
    user: str
    shell: str
    sandboxed: bool = False

    @classmethod
    def for_current_user(cls, home: Path) -> Direct:
        try:
            entry = pwd.getpwuid(os.getuid())
            shell, user = entry.pw_shell or "/bin/bash", entry.pw_name
        except KeyError:
            shell, user = "/bin/bash", str(os.getuid())
        if not os.access(shell, os.X_OK) or shell.endswith(("/nologin", "/false")):
            shell = "/bin/bash"
        return cls(home=home, user=user, shell=shell)

    @property
    def login_home(self) -> str:
        return str(self.home)

    def argv(self, argv: list[str]) -> list[str]:
        return argv

    def cwd(self) -> Path:
        return self.home

    def path(self) -> str:
        return os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")

    def shell_in_pty(self, command: str | None) -> list[str]:
        name = os.path.basename(self.shell)
        # argv[0] starting with '-': a login shell
        shell = [self.shell, name, "-c", command] if command else [self.shell, f"-{name}"]
        return [sys.executable, "-I", "-S", "-c", _LOGIN_TTY, *shell]

    def open_pty(self) -> tuple[int, int, str]:
        master, slave = os.openpty()
        return master, slave, os.ttyname(slave)

    def signal_target(self, pid: int) -> int:
        return pid

    def forward(self, host: str, port: int) -> bool | Awaitable[Any]:
        return True


@dataclass
class Sandboxed:
    """Processes join the environment's sandbox as its owner (`leeward.sandbox`)."""

    running: Running
    home: Path
    """The agent's view of the home (leeward.sandbox.owners.home_view), which the owner's
    threads reach without walking the host's path to it."""
    user: str
    shell: str = "/bin/bash"
    sandboxed: bool = True

    @property
    def login_home(self) -> str:
        return f"/home/{self.user}"

    def argv(self, argv: list[str]) -> list[str]:
        return self.running.command(argv)

    def cwd(self) -> Path:
        return Path("/")  # the join changes to the home inside

    def path(self) -> str:
        return f"{self.login_home}/.local/bin:/usr/local/bin:/usr/bin:/bin"

    def shell_in_pty(self, command: str | None) -> list[str]:
        shell = [self.shell, "-c", command] if command else [self.shell, "-l"]
        return self.argv(["setsid", "--wait", "--ctty", *shell])

    def open_pty(self) -> tuple[int, int, str]:
        master, slave = self.running.open_pty()
        number = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, b"\0\0\0\0"))[0]
        return master, slave, f"/dev/pts/{number}"

    def signal_target(self, pid: int) -> int:
        return leader(pid)

    def forward(self, host: str, port: int) -> bool | Awaitable[Any]:
        if not self.running.net:
            return True  # the host's network is the sandbox's
        return self._forward_inside(host, port)

    async def _forward_inside(self, host: str, port: int) -> Any:
        """What asyncssh's own forward does, from the sandbox's network: `localhost` is the
        environment's, as on a VM."""
        import asyncssh
        from asyncssh.forward import SSHForwarder

        loop = asyncio.get_running_loop()
        try:
            sock = await in_thread(connect_inside, self.running.pid, host, port, FORWARD_SECONDS)
            sock.setblocking(False)
            _, peer = await loop.create_connection(SSHForwarder, sock=sock)
        except OSError as exc:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
        return SSHForwarder(peer)

    def sftp_server(self) -> list[str]:
        return self.argv([SFTP_SERVER])


def login_environment(place: Place) -> dict[str, str]:
    """What every process of the environment starts with: who it is, its home, shell and PATH
    (sessions add the client's, setup steps the locale)."""
    return {
        "HOME": place.login_home,
        "USER": place.user,
        "LOGNAME": place.user,
        "SHELL": place.shell,
        "PATH": place.path(),
    }


def set_window(fd: int, rows: int, cols: int, px_w: int = 0, px_h: int = 0) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, px_w, px_h))
