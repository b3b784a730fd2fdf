"""Whether a process is alive: a running one is, a reaped one is not, and neither is a zombie
(exited, not yet reaped by its parent), which `kill -0` alone would call alive."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from leeward.common.processes import pid_alive
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
