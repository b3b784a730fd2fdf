"""A sandboxed user for running the real `leeward` console script: HOME and XDG_* point into
the test's tmp_path, so nothing touches the real user's files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from leeward.paths import Paths

LEEWARD = Path(sys.executable).with_name("leeward")


@dataclass
class Sandbox:
    """A user's home for one test: every file `leeward` writes lands under `root`."""

    root: Path
    env: dict[str, str]

    @property
    def paths(self) -> Paths:
        return Paths(
            config_dir=self.root / "config" / "leeward",
            data_dir=self.root / "data" / "leeward",
            state_dir=self.root / "state" / "leeward",
            ssh_dir=self.root / "home" / ".ssh" / "leeward",
        )

    def run(
        self, *args: str, input: str | None = None, timeout: float = 120, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(LEEWARD), *args],
            env=self.env,
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"leeward {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result


def make_sandbox(tmp_path: Path) -> Sandbox:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "LEEWARD_", "SSH_AUTH_SOCK"))
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        COLUMNS="200",
        NO_COLOR="1",
    )
    return Sandbox(root=tmp_path, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
