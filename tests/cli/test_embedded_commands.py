"""`leeward up` and `leeward down`: nothing running, and a port another process took. (The whole
way from `up` to `down`, restarts included, is test_end_to_end.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import ipaddress
import random
import subprocess
import threading
from collections.abc import Iterator

from leeward.common.processes import pid_alive
from leeward.fleet.config import FleetConfig, HostConfig, RegionConfig, dump_config
from leeward_protocol.fleet import Flavor, FlavorKind, Hardware
from tests.conftest import free_port, until

from .sandbox import LEEWARD, Sandbox


def test_down_when_nothing_runs(sandbox: Sandbox) -> None:
    result = sandbox.run("down")
    assert result.returncode == 0
    assert "not running" in result.stdout


class Healthz(http.server.BaseHTTPRequestHandler):
    """Another fleet, as `leeward up` sees one: `/healthz` answers 200."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, format: str, *args: object) -> None:
        pass


class OtherFleet(http.server.ThreadingHTTPServer):
    """Bound without SO_REUSEADDR, so the embedded fleet cannot bind the port beside it even
    before it listens."""

    allow_reuse_address = False
    daemon_threads = True


@contextlib.contextmanager
def other_fleet(port: int, *, listening: bool) -> Iterator[OtherFleet]:
    """Another process's server on `port` (this test's, not `leeward up`'s): listening and
    answering `/healthz` now, or only bound until `answer()` is called."""
    server = OtherFleet(("127.0.0.1", port), Healthz, bind_and_activate=False)
    server.server_bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)

    def answer() -> None:
        server.server_activate()
        thread.start()

    server.answer = answer  # type: ignore[attr-defined]
    if listening:
        answer()
    try:
        yield server
    finally:
        if thread.is_alive():
            server.shutdown()
        server.server_close()


def embedded_config(sandbox: Sandbox, port: int) -> None:
    """A small embedded fleet on `port`: one region in the CLI tests' range, no warm pool, so
    a fleet that does start (before its HTTP port) starts nothing else."""
    network = f"127.{random.randint(208, 223)}.{random.randint(0, 255)}.0/24"
    config = FleetConfig.model_validate(
        {
            "listen_port": port,
            "provider": {"ssh_port": free_port(), "stop_agents_on_exit": True},
            "regions": [
                RegionConfig(
                    name="north",
                    network=ipaddress.IPv4Network(network),
                    hosts=[HostConfig(name="north-h1", cpus=8, memory_gib=16)],
                )
            ],
            "flavors": [
                Flavor(name="tiny", kind=FlavorKind.VM, hardware=Hardware(cpus=1, memory_gib=1))
            ],
            "profiles": [],
        }
    )
    path = sandbox.paths.embedded_dir / "fleet.toml"
    path.parent.mkdir(parents=True)
    path.write_text(dump_config(config))


def test_up_says_the_port_is_taken_when_another_process_answers_healthz(sandbox: Sandbox) -> None:
    port = free_port()
    embedded_config(sandbox, port)
    url = f"http://127.0.0.1:{port}"
    taken = f"Something else is listening at {url}: stop it, or run `leeward up --port N`"

    # Taken before `up` looks: said before anything starts.
    with other_fleet(port, listening=True):
        result = sandbox.run("up")
    assert result.returncode == 1, result
    assert taken in result.stderr and "Started" not in result.stdout, result
    assert not (sandbox.paths.embedded_dir / "fleet.pid").exists()

    # Taken between `up`'s look and its fleet's bind (free when looked at, another fleet
    # answering by the time ours starts): our fleet dies of EADDRINUSE while the other's
    # /healthz answers. `up` asks its own process, not the port.
    pid_file = sandbox.paths.embedded_dir / "fleet.pid"
    with other_fleet(port, listening=False) as other:
        up = subprocess.Popen(
            [str(LEEWARD), "up"],
            env=sandbox.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=sandbox.root,
        )
        try:
            asyncio.run(until(pid_file.exists, "up started its fleet", timeout=60))
            other.answer()  # type: ignore[attr-defined]
            out, err = up.communicate(timeout=120)
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
    assert up.returncode == 1, (out, err)
    assert taken in err and "Started" not in out, (out, err)
    assert "is taken (another fleet, or another program)" in err, err  # its fleet's log
    pid = int(pid_file.read_text())
    assert not pid_alive(pid), "our fleet died of it"

    # On a free port, `up` starts its own fleet and knows it by its listening socket. (Not the
    # same port: the other server's closed connections hold it a while in TIME_WAIT.)
    free = free_port()
    try:
        started = sandbox.run("up", "--port", str(free), check=True)
        assert f"Started the embedded fleet at http://127.0.0.1:{free}" in started.stdout
    finally:
        down = sandbox.run("down", timeout=60)
        assert down.returncode == 0, down.stderr
