"""The local provider's lifecycle with real agent processes: start, adopt, stop, fail."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from leeward.providers.base import EnvironmentSpec, Provider, ProviderError
from leeward.providers.local import LocalProvider
from tests.conftest import until


async def accepts(spec: EnvironmentSpec) -> bool:
    try:
        reader, writer = await asyncio.open_connection(spec.address, spec.ssh_port)
    except OSError:
        return False
    banner = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return banner.startswith(b"SSH-2.0-")


def pid_of(data_dir: Path, spec: EnvironmentSpec) -> int:
    return int((data_dir / spec.id / "agent.pid").read_text())


def test_it_is_a_provider(data_dir: Path) -> None:
    provider: Provider = LocalProvider(data_dir)
    assert provider.name == "local"


async def test_start_is_idempotent_and_returns_once_ssh_answers(
    provider: LocalProvider, make_spec: Callable[..., EnvironmentSpec], data_dir: Path
) -> None:
    spec = make_spec()
    await provider.start(spec)
    assert await accepts(spec)
    pid = pid_of(data_dir, spec)
    await provider.start(spec)
    assert pid_of(data_dir, spec) == pid
    assert await provider.running([spec.id, "e-never-was"]) == {spec.id}
    assert (data_dir / spec.id / "home").is_dir()


async def test_a_new_provider_adopts_running_agents(
    make_spec: Callable[..., EnvironmentSpec], data_dir: Path
) -> None:
    first = LocalProvider(data_dir)
    spec = make_spec()
    await first.start(spec)
    pid = pid_of(data_dir, spec)
    await first.close()  # not configured to stop agents: they outlive the fleet
    del first

    again = LocalProvider(data_dir)
    try:
        assert await again.running([spec.id]) == {spec.id}
        await again.start(spec)  # already running with this spec: nothing to do
        assert pid_of(data_dir, spec) == pid
        assert await accepts(spec)
    finally:
        await again.stop(spec.id)
    assert await again.running([spec.id]) == set()


async def test_stop_destroys_the_disk_and_is_idempotent(
    provider: LocalProvider, make_spec: Callable[..., EnvironmentSpec], data_dir: Path
) -> None:
    spec = make_spec()
    await provider.start(spec)
    (data_dir / spec.id / "home" / "work.txt").write_text("precious")
    pid = pid_of(data_dir, spec)
    await provider.stop(spec.id)
    assert not (data_dir / spec.id).exists()
    assert (
        not Path(f"/proc/{pid}").exists()
        or b"leeward.agent" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    )
    assert not await accepts(spec)
    assert await provider.running([spec.id]) == set()
    await provider.stop(spec.id)


async def test_a_stale_pid_file_is_not_mistaken_for_an_agent(
    provider: LocalProvider, make_spec: Callable[..., EnvironmentSpec], data_dir: Path
) -> None:
    spec = make_spec()
    (data_dir / spec.id).mkdir(parents=True)
    (data_dir / spec.id / "agent.pid").write_text(f"{os.getpid()}\n")  # alive, but not an agent
    assert await provider.running([spec.id]) == set()
    await provider.start(spec)
    assert pid_of(data_dir, spec) != os.getpid()
    assert await provider.running([spec.id]) == {spec.id}


async def test_start_on_a_taken_address_fails_quickly_and_says_why(
    provider: LocalProvider, make_spec: Callable[..., EnvironmentSpec]
) -> None:
    spec = make_spec()
    with socket.socket() as squatter:
        squatter.bind((spec.address, spec.ssh_port))
        squatter.listen()
        started = time.monotonic()
        with pytest.raises(ProviderError) as failure:
            await provider.start(spec)
        assert time.monotonic() - started < 10
    message = str(failure.value)
    assert spec.id in message
    assert "Address already in use" in message
    assert f"{spec.address}:{spec.ssh_port}" in message
    assert await provider.running([spec.id]) == set()


async def test_assign_needs_a_running_agent(
    provider: LocalProvider, make_spec: Callable[..., EnvironmentSpec]
) -> None:
    with pytest.raises(ProviderError, match="not running"):
        await provider.assign(make_spec(owner="alice"))


async def test_close_stops_agents_only_when_configured_and_keeps_their_disks(
    make_spec: Callable[..., EnvironmentSpec], data_dir: Path
) -> None:
    embedded = LocalProvider(data_dir, stop_agents_on_exit=True)
    spec = make_spec()
    await embedded.start(spec)
    await embedded.close()
    try:
        assert await embedded.running([spec.id]) == set()
        assert not await accepts(spec)
        assert (data_dir / spec.id / "home").is_dir()
        await embedded.start(spec)  # the disk is still there: it comes back
        assert await embedded.running([spec.id]) == {spec.id}
    finally:
        await embedded.stop(spec.id)


async def test_invalid_ids_are_refused(provider: LocalProvider) -> None:
    with pytest.raises(ProviderError, match="not a valid identifier"):
        await provider.stop("../etc")


def agents_for(spec: EnvironmentSpec) -> list[int]:
    """Processes running this environment's agent, found from their command lines."""
    marker = f"{spec.id}/agent.json".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != b"Z":
            found.append(int(entry))
    return found


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.01, 0.05, 0.2])
async def test_a_start_cancelled_midway_leaves_no_agent_that_stop_cannot_find(
    provider: LocalProvider, make_spec: Callable[..., EnvironmentSpec], delay: float
) -> None:
    # The fleet stopping cancels starts in flight; whatever was launched must stay findable.
    spec = make_spec()
    start = asyncio.create_task(provider.start(spec))
    await asyncio.sleep(delay)
    start.cancel()
    with contextlib.suppress(asyncio.CancelledError, ProviderError):
        await start
    await provider.stop(spec.id)
    await until(lambda: not agents_for(spec), f"the agent of {spec.id} is gone", timeout=10)
