"""Who gets in, and whom ssh trusts: certificates both ways, warm agents, reassignment."""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from leeward.fleet.ca import CertificateAuthority
from leeward.providers.base import EnvironmentSpec
from leeward.providers.local import LocalProvider

from .kit import Fleet, Kit


async def keyscan(spec: EnvironmentSpec) -> set[str]:
    done = await asyncio.to_thread(
        subprocess.run,
        ["ssh-keyscan", "-T", "5", "-p", str(spec.ssh_port), spec.address],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return {line.split()[2] for line in done.stdout.splitlines() if line and line[0] != "#"}


def host_key_blob(spec: EnvironmentSpec) -> str:
    import asyncssh

    key = asyncssh.import_private_key(spec.identity.host_key)
    return bytes(key.export_public_key()).decode().split()[1]


async def test_a_host_not_certified_by_the_fleet_is_refused(
    fleet: Fleet, kit: Kit, provider: LocalProvider
) -> None:
    impostor = Fleet(ca=CertificateAuthority.generate(), tmp=fleet.tmp)
    spec = impostor.spec(owner="alice", user_ca=fleet.ca.user_ca_public)
    await provider.start(spec)
    ssh = kit.ssh(spec, kit.user("alice"))
    done = await ssh.run("ssh", "box", "true")
    assert done.returncode == 255
    assert b"Host key verification failed" in done.stderr


async def test_only_the_owner_with_a_valid_certificate_gets_in(
    fleet: Fleet, kit: Kit, provider: LocalProvider
) -> None:
    spec = fleet.spec(owner="alice")
    await provider.start(spec)

    done = await kit.ssh(spec, kit.user("alice")).run("ssh", "box", "echo in")
    assert (done.returncode, done.stdout) == (0, b"in\n")

    # Bob's own valid certificate, as bob or claiming to be alice.
    bob = kit.user("bob")
    for login in ("bob", "alice"):
        done = await kit.ssh(spec, bob, login=login).run("ssh", "box", "true")
        assert done.returncode == 255
        assert b"Permission denied (publickey)" in done.stderr

    # Alice's key, certified for another principal.
    done = await kit.ssh(spec, kit.user("alice", principal="root")).run("ssh", "box", "true")
    assert b"Permission denied (publickey)" in done.stderr

    # Alice's certificate, expired an hour ago (asyncssh checks validity against its clock).
    expired = kit.user("alice", now=datetime.now(UTC) - timedelta(hours=2), hours=1)
    done = await kit.ssh(spec, expired).run("ssh", "box", "true")
    assert b"Permission denied (publickey)" in done.stderr

    # Alice's certificate from a CA the environment does not trust.
    stranger = kit.user("alice", ca=CertificateAuthority.generate())
    done = await kit.ssh(spec, stranger).run("ssh", "box", "true")
    assert b"Permission denied (publickey)" in done.stderr


async def test_a_warm_agent_accepts_nobody(fleet: Fleet, kit: Kit, provider: LocalProvider) -> None:
    spec = fleet.spec(owner=None)
    await provider.start(spec)
    for name in ("alice", "root"):
        done = await kit.ssh(spec, kit.user(name)).run("ssh", "box", "true")
        assert done.returncode == 255
        assert b"Permission denied (publickey)" in done.stderr


async def test_assign_renews_the_host_identity_and_the_owner(
    fleet: Fleet, kit: Kit, provider: LocalProvider
) -> None:
    warm = fleet.spec(owner=None)
    await provider.start(warm)
    assert await keyscan(warm) == {host_key_blob(warm)}

    claimed = fleet.reassigned(warm, owner="alice")
    await provider.assign(claimed)
    offered = await keyscan(claimed)
    assert host_key_blob(claimed) in offered
    assert host_key_blob(warm) not in offered

    alice = kit.ssh(claimed, kit.user("alice"))
    done = await alice.run("ssh", "box", "echo $LEEWARD_ENVIRONMENT_ID")
    assert done.stdout.decode().strip() == claimed.id, done.stderr


async def test_assign_closes_connections_made_under_the_previous_identity(
    fleet: Fleet, kit: Kit, provider: LocalProvider
) -> None:
    spec = fleet.spec(owner="alice")
    await provider.start(spec)
    alice = kit.ssh(spec, kit.user("alice"))
    session = subprocess.Popen(
        alice.argv("ssh", "box", "echo started; sleep 60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert session.stdout is not None
        line = await asyncio.to_thread(session.stdout.readline)
        assert line == b"started\n"
        started = time.monotonic()
        await provider.assign(fleet.reassigned(spec, owner="bob"))
        await asyncio.to_thread(session.wait, 10)
        assert time.monotonic() - started < 10
        assert session.returncode != 0
    finally:
        if session.poll() is None:
            session.kill()
        session.wait()
        for stream in (session.stdout, session.stderr):
            if stream:
                stream.close()
    bob = kit.ssh(spec, kit.user("bob"))
    assert (await bob.run("ssh", "box", "true")).returncode == 0
    assert (await alice.run("ssh", "box", "true")).returncode == 255


async def test_start_with_a_new_identity_reloads_without_restarting(
    fleet: Fleet, kit: Kit, provider: LocalProvider
) -> None:
    spec = fleet.spec(owner="alice")
    await provider.start(spec)
    pid_file = fleet.tmp / "envs" / spec.id / "agent.pid"
    pid = pid_file.read_text()
    await provider.start(replace(spec, identity=replace(spec.identity, owner="bob")))
    assert pid_file.read_text() == pid
    assert (await kit.ssh(spec, kit.user("bob")).run("ssh", "box", "true")).returncode == 0
