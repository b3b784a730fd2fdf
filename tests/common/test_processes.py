"""Whether a process is alive: a running one is, a reaped one is not, and neither is a zombie
(exited, not yet reaped by its parent), which `kill -0` alone would call alive. And whether it is
the process listening on a port, not merely one that answers there."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from leeward.common.processes import listens_on, pid_alive
from tests.conftest import until


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


async def test_running_zombie_and_reaped() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(child.pid)
        child.kill()
        await until(lambda: state(child.pid) == "Z", "the child is a zombie", timeout=10)
        assert not pid_alive(child.pid)  # kill -0 still succeeds on a zombie
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc")
def test_the_process_listening_on_a_port_is_told_from_another() -> None:
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        assert listens_on(os.getpid(), port) is False  # bound is not listening
        bound.listen()
        assert listens_on(os.getpid(), port) is True
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert listens_on(other.pid, port) is False  # alive, but not the one listening
        finally:
            other.kill()
            other.wait()
