"""The real-VS-Code harness: scripts/setup-e2e's installs, code-server in a sandboxed home, the
Playwright driver (extension/e2e/run.mjs), artifacts, and a sweep for stray processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leeward.common.processes import pid_alive
from tests.conftest import free_port, until

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup-e2e"
DRIVER = REPO / "extension" / "e2e" / "run.mjs"
ARTIFACTS = REPO / "test-artifacts" / "e2e"

SETUP_SECONDS = 1200  # a cold install compiles code-server's native modules
START_SECONDS = 90
STOP_SECONDS = 15

# The workbench as a test wants it: no welcome page, no chat, no gallery or update checks, a
# terminal whose text is in the DOM (the DOM renderer) so the driver can read it.
WORKBENCH_SETTINGS: dict[str, Any] = {
    "workbench.startupEditor": "none",
    "workbench.tips.enabled": False,
    "workbench.secondarySideBar.defaultVisibility": "hidden",
    "chat.disableAIFeatures": True,
    "extensions.autoCheckUpdates": False,
    "extensions.autoUpdate": False,
    "extensions.ignoreRecommendations": True,
    "telemetry.telemetryLevel": "off",
    "update.mode": "none",
    "terminal.integrated.gpuAcceleration": "off",
    "terminal.integrated.enablePersistentSessions": False,
    "security.workspace.trust.enabled": False,
    "git.enabled": False,
}

# code-server asks an extension gallery at startup; point it at a closed port on loopback.
NO_GALLERY = json.dumps(
    {
        "serviceUrl": "http://127.0.0.1:9/gallery",
        "itemUrl": "http://127.0.0.1:9/item",
        "resourceUrlTemplate": "http://127.0.0.1:9/resource/{publisher}/{name}/{version}/{path}",
    }
)


@dataclass(frozen=True)
class Tools:
    node: Path
    code_server: Path
    chromium: Path
    driver_dir: Path


def setup_tools() -> Tools:
    """Run scripts/setup-e2e (quick when cached) and read where it put things."""
    started = time.monotonic()
    done = subprocess.run(
        [str(SETUP)],
        capture_output=True,
        text=True,
        timeout=SETUP_SECONDS,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    print(done.stderr, end="")
    if done.returncode != 0:
        raise AssertionError(
            f"scripts/setup-e2e exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    found = dict(
        line.split("=", 1) for line in done.stdout.splitlines() if line.startswith("LEEWARD_E2E_")
    )
    print(f"setup-e2e took {time.monotonic() - started:.1f} s")
    return Tools(
        node=Path(found["LEEWARD_E2E_NODE"]),
        code_server=Path(found["LEEWARD_E2E_CODE_SERVER"]),
        chromium=Path(found["LEEWARD_E2E_CHROMIUM"]),
        driver_dir=Path(found["LEEWARD_E2E_DIR"]),
    )


def artifacts_dir(name: str) -> Path:
    """test-artifacts/e2e/NAME in the repo, emptied first (LEEWARD_E2E_ARTIFACTS overrides)."""
    base = Path(os.environ.get("LEEWARD_E2E_ARTIFACTS") or ARTIFACTS)
    directory = base / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


class CodeServer:
    """code-server on a free loopback port, with its own extensions and user-data dirs, run
    with `env` (the sandboxed home). `stop()` ends it and everything it started."""

    def __init__(self, tools: Tools, root: Path, env: dict[str, str]) -> None:
        self.tools = tools
        self.root = root
        self.env = dict(env)
        self.extensions_dir = root / "extensions"
        self.user_data_dir = root / "user-data"
        self.workspace = root / "workspace"
        self.log_path = root / "code-server.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        for d in (self.extensions_dir, self.user_data_dir / "User", self.workspace):
            d.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?folder={self.workspace}"

    def _command(self, *args: str) -> list[str]:
        return [
            str(self.tools.node),
            str(self.tools.code_server),
            "--extensions-dir",
            str(self.extensions_dir),
            "--user-data-dir",
            str(self.user_data_dir),
            *args,
        ]

    def _env(self) -> dict[str, str]:
        env = dict(self.env)
        env.setdefault("EXTENSIONS_GALLERY", NO_GALLERY)
        return env

    def write_settings(self, extra: dict[str, Any]) -> None:
        """User settings, and the same as the remote machine's: the workbench is a remote
        window of code-server's server, which reads settings of `machine` scope (such as
        leeward.daemonPath) only from Machine/settings.json."""
        text = json.dumps({**WORKBENCH_SETTINGS, **extra}, indent=2)
        for scope in ("User", "Machine"):
            (self.user_data_dir / scope).mkdir(parents=True, exist_ok=True)
            (self.user_data_dir / scope / "settings.json").write_text(text)

    def install_extension(self, vsix: Path) -> None:
        done = subprocess.run(
            self._command("--install-extension", str(vsix)),
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0 or "successfully installed" not in done.stdout:
            raise AssertionError(
                f"code-server --install-extension {vsix} exited {done.returncode}:\n"
                f"{done.stdout}\n{done.stderr}"
            )

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self._command(
                    "--bind-addr",
                    f"127.0.0.1:{self.port}",
                    "--auth",
                    "none",
                    "--disable-telemetry",
                    "--disable-update-check",
                    "--disable-workspace-trust",
                    "--disable-getting-started-override",
                    str(self.workspace),
                ),
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.root,
            )
        process = self.process

        def answering() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    f"code-server exited {process.returncode} while starting:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/healthz", timeout=2
                ) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        what = f"code-server answered on port {self.port}"
        asyncio.run(until(answering, what, timeout=START_SECONDS))

    def stop(self) -> None:
        if self.process is None:
            return
        terminate_tree(self.process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_SECONDS)
        self.process = None

    def collect_logs(self, into: Path) -> None:
        if self.log_path.exists():
            shutil.copy(self.log_path, into / "code-server.log")
        logs = self.user_data_dir / "logs"
        if logs.is_dir():
            shutil.copytree(logs, into / "code-server-logs", dirs_exist_ok=True)


def run_driver(
    tools: Tools,
    config: dict[str, Any],
    env: dict[str, str],
    artifacts: Path,
    driver: Path = DRIVER,
) -> dict[str, Any]:
    """Run `driver` (extension/e2e/run.mjs unless told) with `config`; returns its result.json
    (ok or not)."""
    process = start_driver(tools, config, env, artifacts, driver)
    return driver_result(process, artifacts, config["deadlineSeconds"] + 60)


def start_driver(
    tools: Tools,
    config: dict[str, Any],
    env: dict[str, str],
    artifacts: Path,
    driver: Path = DRIVER,
) -> subprocess.Popen[bytes]:
    """Start `driver` with `config` (written to the artifacts), its output in driver.log, while
    the test goes on."""
    config_path = artifacts / "driver-config.json"
    config_path.write_text(json.dumps(config, indent=2))
    with (artifacts / "driver.log").open("w") as log:
        return subprocess.Popen(
            [str(tools.node), str(driver), str(config_path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tools.driver_dir,
        )


def driver_result(
    process: subprocess.Popen[bytes], artifacts: Path, timeout: float
) -> dict[str, Any]:
    """Wait for the driver (ended at `timeout`); its result.json, with its exit code."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        terminate_tree(process.pid)
        process.wait(timeout=STOP_SECONDS)
    print((artifacts / "driver.log").read_text(errors="replace"))
    result_path = artifacts / "result.json"
    result: dict[str, Any] = (
        json.loads(result_path.read_text()) if result_path.exists() else {"ok": False}
    )
    result["exitCode"] = process.returncode
    return result


# -- processes -------------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def terminate_tree(pid: int) -> None:
    """SIGTERM a process and all its descendants (found before any of them dies), then SIGKILL
    whatever is left after a grace period."""
    pids = [pid, *descendants(pid)]
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def processes_of(home: Path, root: Path) -> list[tuple[int, str]]:
    """Processes a test started: running with HOME=`home`, or with `root` (the test's
    temporary directory) in their command line (agents run with their environment's home)."""
    marker, inside = f"HOME={home}".encode(), str(root)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if (marker in environ or inside in cmdline) and pid_alive(int(entry.name)):
            found.append((int(entry.name), cmdline.strip()))
    return found


@contextlib.contextmanager
def no_strays(home: Path, root: Path) -> Iterator[list[tuple[int, str]]]:
    """On the way out, kill whatever the test left running (see `processes_of`), and list it
    in the yielded list so the test can say so."""
    strays: list[tuple[int, str]] = []
    try:
        yield strays
    finally:
        strays.extend(processes_of(home, root))
        for pid, _ in strays:
            terminate_tree(pid)


def collect_logs(sources: list[Path], into: Path) -> None:
    """Copy the *.log files under `sources` (never keys or tokens) into `into`."""
    for source in sources:
        if not source.is_dir():
            continue
        for path in source.rglob("*.log"):
            target = into / "logs" / path.relative_to(source.parent)
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copy(path, target)
