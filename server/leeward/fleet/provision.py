"""Provisioning: an environment's identity (host key, host certificate, agent token), the spec
its host starts its agent from, starting it (or adopting an agent already up), handing a
claimed warm container to its tenant, failing one, and restarting an agent that is gone.

These run in the background (the fleet's per-environment tasks); each state change is its own
short write, guarded by the state it expects, so a delete in the meantime wins."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta

from leeward.fleet.auth import digest, new_secret
from leeward.fleet.backups import restore_home
from leeward.fleet.ca import CertificateAuthority
from leeward.fleet.errors import Unavailable
from leeward.fleet.resources import fqdn, to_resource, update_environment
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import EnvironmentRow
from leeward.providers.base import EnvironmentSpec, HostUnreachable, Identity, ProviderError
from leeward_protocol.fleet import Environment, EnvironmentKind, EnvironmentState, Hardware

log = logging.getLogger(__name__)


def issue_identity(
    authority: CertificateAuthority, zone: str, row: EnvironmentRow, now: datetime
) -> tuple[Identity, str]:
    """A fresh host key, host certificate and agent token for this environment; the token's
    digest is what the row keeps."""
    principals = [fqdn(row, zone), row.id, f"{row.name}.{zone}"]
    if row.expires_at is not None:
        valid_for = max(row.expires_at - now, timedelta(0)) + timedelta(days=1)
    else:
        valid_for = timedelta(days=365)
    key, cert = authority.issue_host_identity(principals, now, valid_for)
    token = new_secret("lwa_")
    return Identity(row.owner, key, cert, token), digest(token)


def agent_spec(fleet: Fleet, row: EnvironmentRow, identity: Identity) -> EnvironmentSpec:
    """What the environment's host starts its agent with."""
    assert row.host and row.address and row.ssh_port and fleet.public_url
    return EnvironmentSpec(
        id=row.id,
        name=row.name,
        fqdn=fqdn(row, fleet.config.zone),
        kind=EnvironmentKind(row.kind),
        region=row.region,
        host=row.host,
        address=row.address,
        ssh_port=row.ssh_port,
        hardware=Hardware(cpus=row.cpus, memory_gib=row.memory_gib, gpus=row.gpus),
        user_ca=fleet.authority.user_ca_public,
        fleet_url=fleet.public_url,
        heartbeat_seconds=fleet.config.heartbeat_seconds,
        identity=identity,
        image=image_of(fleet, row),
    )


def image_of(fleet: Fleet, row: EnvironmentRow) -> str:
    """The image of the environment's flavor or profile; the default one if it has left the
    catalog since."""
    shape = fleet.config.flavor(row.flavor or "") or fleet.config.profile(row.profile or "")
    return shape.image if shape is not None else "base"


async def provision(
    fleet: Fleet,
    env_id: str,
    identity: Identity | None = None,
    *,
    adopt: bool = False,
    placed: EnvironmentRow | None = None,
) -> None:
    """Start a placed environment's agent (or, with `adopt`, hand an agent that is already
    up the identity), then mark it running (warm for a pool container).

    `identity` is the one issued when it was placed; after a restart of the fleet it is
    gone (private keys are never stored), so a fresh one is issued."""
    await fleet.url_known.wait()
    started = fleet.clock.monotonic()
    row = placed
    if row is None:
        async with fleet.store.read() as session:
            row = await session.get(EnvironmentRow, env_id)
    if row is None or row.state != EnvironmentState.PROVISIONING:
        return
    provisioning = {EnvironmentState.PROVISIONING.value}
    if identity is None:
        identity, token_digest = issue_identity(
            fleet.authority, fleet.config.zone, row, fleet.clock.now()
        )
        if not await update_environment(
            fleet.store,
            fleet.clock,
            env_id,
            expect=provisioning,
            status_message="certified again after a fleet restart; starting",
            agent_token_digest=token_digest,
        ):
            return
    failing = "Its agent did not start"
    try:
        # Only before its first start: one started again (after an idle stop) has its home.
        if row.restore_from is not None and not adopt and row.ready_at is None:
            failing = f"Its home could not be restored from backup {row.restore_from}"
            await restore_home(fleet, row)
            failing = "Its agent did not start"
        spec = agent_spec(fleet, row, identity)
        await (fleet.provider.assign(spec) if adopt else fleet.provider.start(spec))
    except HostUnreachable as exc:
        # Not a failure of the environment: it stays provisioning, and the recovery loop asks
        # again once the host is back.
        log.warning("environment %s waits for its host: %s", env_id, exc)
        await update_environment(
            fleet.store,
            fleet.clock,
            env_id,
            expect=provisioning,
            status_message=f"waiting for its host: {exc}",
        )
        return
    except ProviderError as exc:
        log.warning("environment %s failed to start: %s", env_id, exc)
        await fail(fleet, env_id, f"{failing}: {exc}")
        return
    final = EnvironmentState.WARM if row.owner is None else EnvironmentState.RUNNING
    now = fleet.clock.now()
    if await update_environment(
        fleet.store,
        fleet.clock,
        env_id,
        expect=provisioning,
        state=final.value,
        status_message="ready",
        ready_at=now,
    ):
        log.info(
            "environment %s is %s on %s after %.2f s",
            env_id,
            final.value,
            row.host,
            fleet.clock.monotonic() - started,
        )
    else:
        # Deleted while it was starting: the delete is waiting for us to finish.
        log.info("environment %s was deleted while starting", env_id)


async def hand_over(
    fleet: Fleet, row: EnvironmentRow, identity: Identity, ticket: str
) -> Environment:
    """Hand a claimed warm container to its tenant with the identity issued at the claim,
    under the lease granted with the claim (`ticket`)."""
    async with fleet.leases.holding(f"env:{row.id}", ticket):
        return await _hand_over(fleet, row, identity)


async def _hand_over(fleet: Fleet, row: EnvironmentRow, identity: Identity) -> Environment:
    await fleet.url_known.wait()
    try:
        await fleet.provider.assign(agent_spec(fleet, row, identity))
    except ProviderError as exc:
        await fail(fleet, row.id, f"The warm container could not be handed over: {exc}")
        raise Unavailable("A warm container failed while being handed over; try again.") from exc
    now = fleet.clock.now()
    await update_environment(
        fleet.store,
        fleet.clock,
        row.id,
        expect={EnvironmentState.PROVISIONING.value},
        state=EnvironmentState.RUNNING.value,
        status_message="ready",
        ready_at=now,
    )
    row.state, row.status_message, row.ready_at, row.updated_at = (
        EnvironmentState.RUNNING.value,
        "ready",
        now,
        now,
    )
    return to_resource(row, fleet.config.zone)


async def fail(fleet: Fleet, env_id: str, reason: str) -> None:
    """Stop what may run of it and mark it failed: it holds no name, address or token any
    more."""
    with contextlib.suppress(ProviderError):
        await fleet.provider.stop(env_id)
    await update_environment(
        fleet.store,
        fleet.clock,
        env_id,
        state=EnvironmentState.FAILED.value,
        status_message=reason,
        live_name=None,
        live_address=None,
        agent_token_digest=None,
    )


async def restart_agent(fleet: Fleet, env_id: str) -> None:
    """Start the agent of a running (or migrating, or warm) environment again, with a fresh
    identity: the old one's private key is not kept."""
    await fleet.url_known.wait()
    async with fleet.store.read() as session:
        row = await session.get(EnvironmentRow, env_id)
    if row is None or row.state not in (
        EnvironmentState.RUNNING,
        EnvironmentState.MIGRATING,
        EnvironmentState.WARM,
    ):
        return
    identity, token_digest = issue_identity(
        fleet.authority, fleet.config.zone, row, fleet.clock.now()
    )
    await update_environment(
        fleet.store,
        fleet.clock,
        env_id,
        agent_token_digest=token_digest,
        status_message="restarting agent",
    )
    try:
        await fleet.provider.start(agent_spec(fleet, row, identity))
    except ProviderError as exc:
        await update_environment(
            fleet.store, fleet.clock, env_id, status_message=f"agent restart failed: {exc}"
        )
        return
    await update_environment(fleet.store, fleet.clock, env_id, status_message="ready")
