"""The agent's SSH server against the real OpenSSH tools: ssh, scp, sftp, rsync, ssh -L."""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import select
import signal
import socket
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from leeward.providers.base import EnvironmentSpec
from leeward.providers.local import LocalProvider
from tests.conftest import echo_inside, free_port, until

from .kit import SSH, Fleet, Kit


@pytest.fixture
async def env(fleet: Fleet, provider: LocalProvider) -> EnvironmentSpec:
    spec = fleet.spec(owner="alice")
    await provider.start(spec)
    return spec


@pytest.fixture
def alice(kit: Kit, env: EnvironmentSpec) -> SSH:
    return kit.ssh(env, kit.user("alice"))


def home_of(tmp_path: Path, spec: EnvironmentSpec) -> Path:
    return tmp_path / "envs" / spec.id / "home"


async def test_exec_output_exit_status_and_signals(
    alice: SSH, tmp_path: Path, env: EnvironmentSpec, provider: LocalProvider
) -> None:
    done = await alice.run("ssh", "box", "echo out; echo err >&2; exit 7")
    assert (done.returncode, done.stdout, done.stderr) == (7, b"out\n", b"err\n")

    done = await alice.run("ssh", "box", "pwd; echo $HOME")
    # In a sandbox the home is /home/OWNER; on the host, the environment's directory.
    home = "/home/alice" if provider.isolates_owners else str(home_of(tmp_path, env))
    assert done.stdout.decode().split() == [home, home]

    # stdin reaches the command and its EOF ends it; binary data passes unchanged.
    payload = secrets.token_bytes(300_000)
    done = await alice.run("ssh", "box", "cat", input=payload)
    assert done.returncode == 0
    assert done.stdout == payload

    # A command killed by a signal: ssh reports it and exits 255, as with sshd.
    done = await alice.run("ssh", "box", "kill -TERM $$")
    assert done.returncode == 255


async def test_lang_and_lc_are_passed_other_env_is_not(alice: SSH) -> None:
    done = await alice.run(
        "ssh",
        "-o",
        "SetEnv=LC_LEEWARD=yes LANG=C.UTF-8 EVIL=1",
        "box",
        'echo "$LC_LEEWARD/$LANG/${EVIL:-unset}"',
    )
    assert done.stdout == b"yes/C.UTF-8/unset\n", done.stderr


def _expect(fd: int, wanted: bytes, seen: bytearray, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"did not see {wanted!r}; got {bytes(seen[-400:])!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen.extend(os.read(fd, 65536))
            except OSError:  # the PTY closed
                raise AssertionError(f"PTY closed before {wanted!r}; got {bytes(seen)!r}") from None
    del seen[: seen.index(wanted) + len(wanted)]


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def test_interactive_shell_has_a_terminal_that_follows_the_window(alice: SSH) -> None:
    # ssh itself runs on a terminal, as when a person types: its size is what the agent gets.
    master, slave = os.openpty()
    _set_size(slave, 30, 100)
    ssh = subprocess.Popen(
        alice.argv("ssh", "-tt", "box"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    seen = bytearray()

    def say(line: str) -> None:
        os.write(master, line.encode() + b"\n")

    try:
        say("tty; stty size; echo MARK$((1+1))")
        await asyncio.to_thread(_expect, master, b"/dev/pts/", seen)
        await asyncio.to_thread(_expect, master, b"30 100", seen)
        await asyncio.to_thread(_expect, master, b"MARK2", seen)

        _set_size(master, 40, 120)
        os.kill(ssh.pid, signal.SIGWINCH)
        # The resize travels asynchronously: ask until the shell sees it.
        deadline = time.monotonic() + 10
        while True:
            say("stty size")
            try:
                await asyncio.to_thread(_expect, master, b"40 120", seen, 1.0)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

        # Job control: Ctrl-C interrupts the foreground job, not the shell.
        say("sleep 31.4159")
        # Ctrl-C before the shell hands the terminal to the job would hit the shell: wait until
        # `sleep` is the terminal's foreground process group ('+' in its state).
        probe = 'ps -eo stat=,args= | awk \'$2 == "sleep" && $3 == "31.4159" {print $1}\''

        async def foreground() -> bool:
            return b"+" in (await alice.run("ssh", "box", probe)).stdout

        await until(foreground, "sleep became the foreground job", timeout=10)
        os.write(master, b"\x03")
        say("echo STATUS=$?")
        await asyncio.to_thread(_expect, master, b"STATUS=130", seen)

        say("exit 3")
        status = await asyncio.to_thread(ssh.wait, 10)
        assert status == 3
    finally:
        if ssh.poll() is None:
            ssh.kill()
            ssh.wait()
        os.close(master)


async def test_scp_in_sftp_and_legacy_modes(
    alice: SSH, tmp_path: Path, env: EnvironmentSpec
) -> None:
    local = tmp_path / "payload.bin"
    payload = secrets.token_bytes(500_000)
    local.write_bytes(payload)
    home = home_of(tmp_path, env)

    done = await alice.run("scp", str(local), "box:sftp-mode.bin")
    assert done.returncode == 0, done.stderr
    done = await alice.run("scp", "-O", str(local), "box:legacy-mode.bin")
    assert done.returncode == 0, done.stderr
    assert (home / "sftp-mode.bin").read_bytes() == payload
    assert (home / "legacy-mode.bin").read_bytes() == payload

    for mode, name in ((["-O"], "legacy-mode.bin"), ([], "sftp-mode.bin")):
        back = tmp_path / f"back-{name}"
        done = await alice.run("scp", *mode, f"box:{name}", str(back))
        assert done.returncode == 0, done.stderr
        assert back.read_bytes() == payload


async def test_sftp_batch(alice: SSH, tmp_path: Path, env: EnvironmentSpec) -> None:
    (tmp_path / "up.txt").write_text("hello sftp\n")
    batch = tmp_path / "batch"
    batch.write_text(
        f"mkdir dir\ncd dir\nput {tmp_path / 'up.txt'} up.txt\nls\n"
        f"get up.txt {tmp_path / 'down.txt'}\n"
    )
    done = await alice.run("sftp", "-b", str(batch), "box")
    assert done.returncode == 0, done.stderr
    assert (home_of(tmp_path, env) / "dir" / "up.txt").read_text() == "hello sftp\n"
    assert (tmp_path / "down.txt").read_text() == "hello sftp\n"


async def test_rsync(alice: SSH, tmp_path: Path, env: EnvironmentSpec) -> None:
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a\n")
    (src / "sub" / "b.bin").write_bytes(secrets.token_bytes(100_000))
    rsh = " ".join(alice.argv("ssh"))
    done = await asyncio.to_thread(
        subprocess.run,
        ["rsync", "-a", "-e", rsh, f"{src}/", "box:tree/"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    dst = home_of(tmp_path, env) / "tree"
    assert (dst / "a.txt").read_text() == "a\n"
    assert (dst / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()


async def test_local_port_forwarding(alice: SSH) -> None:
    # The service listens on the environment's own loopback (its sandbox's network).
    echo_port = free_port()
    started = await alice.run("ssh", "box", echo_inside(echo_port))
    assert started.returncode == 0, started.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local_port = s.getsockname()[1]
    ssh = await asyncio.create_subprocess_exec(
        *alice.argv(
            "ssh",
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            f"127.0.0.1:{local_port}:127.0.0.1:{echo_port}",
            "box",
        ),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        async def through_the_tunnel() -> tuple[bytes, asyncio.StreamWriter] | None:
            assert ssh.returncode is None, await ssh.stderr.read() if ssh.stderr else b""
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
                writer.write(b"ping through the tunnel\n")
                line = await asyncio.wait_for(reader.readline(), 5)
            except OSError:
                return None
            if line:
                return line, writer
            writer.close()
            return None

        line, writer = await until(through_the_tunnel, "the forwarded port answered", timeout=10)
        assert line == b"ping through the tunnel\n"
        writer.close()
        await writer.wait_closed()
    finally:
        ssh.terminate()
        await ssh.wait()
