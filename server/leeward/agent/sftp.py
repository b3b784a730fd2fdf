"""SFTP, the two ways the agent serves it: in a sandbox, the image's own `sftp-server` run inside
it as a session like any other (`SubsystemProcess` lets the "sftp" subsystem reach the session
factory); on the host, asyncssh's SFTP server rooted at the home (`HomeSFTP`)."""

from __future__ import annotations

import contextlib

import asyncssh


class SubsystemProcess(asyncssh.SSHServerProcess[bytes]):
    """A session whose "sftp" subsystem is a process like any other (the image's sftp-server,
    run in the sandbox by `Sessions`), not asyncssh's own SFTP server, which would act on the
    host's files as the agent. asyncssh keeps "sftp" for its server, so this overrides its two
    decisions: whether the subsystem may start, and how it starts."""

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == "sftp"

    def session_started(self) -> None:
        chan = self._chan
        if chan is None or chan.get_subsystem() != "sftp":
            super().session_started()
            return
        from asyncssh.constants import EXTENDED_DATA_STDERR

        stdin = asyncssh.SSHReader[bytes](self, chan)
        stdout = asyncssh.SSHWriter[bytes](self, chan)
        stderr = asyncssh.SSHWriter[bytes](self, chan, EXTENDED_DATA_STDERR)
        assert self._session_factory is not None and self._conn is not None
        handler = self._session_factory(stdin, stdout, stderr)
        if handler is not None and not isinstance(handler, bool):
            self._conn.create_task(handler, stdin.logger)


class HomeSFTP(asyncssh.SFTPServer):
    """SFTP with paths relative to the agent's working directory, the home. Ending reports exit
    status 0 as sftp-server does under sshd: scp in SFTP mode fails on a session without one."""

    def exit(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.exit(0)
