"""The e2e tests' fixtures: the tools scripts/setup-e2e installs, and a code-server in a
sandboxed home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..cli.sandbox import Sandbox, make_sandbox
from . import harness
from .common import sandbox_env


@pytest.fixture(scope="session")
def tools() -> harness.Tools:
    return harness.setup_tools()


@pytest.fixture
def code_server(
    tools: harness.Tools, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[harness.CodeServer, Sandbox, Path]]:
    """A sandboxed home and a code-server (not started) using it; afterwards code-server, and
    anything still running in the sandboxed home, are stopped; logs go to the artifacts."""
    artifacts = harness.artifacts_dir(request.node.name)
    print(f"artifacts: {artifacts}")
    sandbox = make_sandbox(tmp_path)
    server = harness.CodeServer(tools, tmp_path / "code-server", sandbox_env(sandbox))
    with harness.no_strays(Path(sandbox.env["HOME"]), tmp_path) as strays:
        try:
            yield server, sandbox, artifacts
        finally:
            server.stop()
            server.collect_logs(artifacts)
    if strays:
        print(f"stopped stray processes: {strays}")
