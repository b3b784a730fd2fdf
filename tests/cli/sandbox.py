"""A sandboxed user for running the real `leeward` console script: HOME and XDG_* point into
the test's tmp_path, so nothing touches the real user's files."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from leeward.client.paths import Paths

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


def run_in_pty(
    sandbox: Sandbox, *args: str, answer: str, prompt: str = "?", timeout: float = 60
) -> tuple[int, str]:
    """Run `leeward ARGS` on a terminal, type `answer` once `prompt` shows; (exit code, output)."""
    import pty
    import select
    import time

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [str(LEEWARD), *args],
        env=sandbox.env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=sandbox.root,
        start_new_session=True,
    )
    os.close(terminal)
    output, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the terminal closed: the process is done
                    break
                if not chunk:
                    break
                output += chunk
            if not answered and prompt.encode() in output:
                os.write(controller, answer.encode() + b"\r")
                answered = True
            if process.poll() is not None and not ready:
                break
        code = process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    return code, output.decode(errors="replace")
