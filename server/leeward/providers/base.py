"""The provider interface: how the fleet makes an environment exist somewhere.

The local provider runs agents as processes on this machine; later ones (ssh-pool, kubernetes,
libvirt) run them on hosts, in pods or in VMs. The fleet speaks to all of them through this
interface only, in terms of environments, addresses and identities: no process ids, paths or
local details cross it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from leeward_protocol.fleet import EnvironmentKind, Hardware
from leeward_protocol.host import (
    BackupOrder,
    BackupProgress,
    BackupResult,
    HostEnvironment,
    HostIdentity,
    RestoreOrder,
    RestorePathsOrder,
    RestoreResult,
)


@dataclass(frozen=True)
class Identity:
    """Who an environment is and whom it serves. A claimed container gets a fresh one, so
    nothing of a previous tenant (host key, agent secret, owner) survives."""

    owner: str | None
    """The user whose certificates the agent accepts; None while the container is warm."""
    host_key: str
    """OpenSSH private key, PEM text."""
    host_certificate: str
    """OpenSSH host certificate for `host_key`, signed by the fleet's host CA."""
    agent_token: str
    """Secret the agent presents to the fleet for heartbeats; the fleet keeps its hash."""


@dataclass(frozen=True)
class EnvironmentSpec:
    id: str
    name: str
    fqdn: str
    kind: EnvironmentKind
    region: str
    host: str
    address: str
    ssh_port: int
    hardware: Hardware
    user_ca: str
    """OpenSSH public key of the fleet's user CA: the only signer the agent trusts."""
    fleet_url: str
    heartbeat_seconds: float
    identity: Identity
    image: str = "base"
    """The image (leeward.sandbox.images) its sandbox starts from: the flavor's or profile's."""

    @property
    def relay_port(self) -> int:
        """The resumable relay's port: the one after the SSH port (as `Environment.relayPort`)."""
        return self.ssh_port + 1

    def to_wire(self) -> HostEnvironment:
        """As the host API carries it (the fields are the same, by name)."""
        fields = {**vars(self), "identity": HostIdentity(**vars(self.identity))}
        return HostEnvironment(**fields)

    @classmethod
    def from_wire(cls, wire: HostEnvironment) -> EnvironmentSpec:
        fields = {name: getattr(wire, name) for name in HostEnvironment.model_fields}
        return cls(**{**fields, "identity": Identity(**wire.identity.model_dump())})


class ProviderError(Exception):
    """The provider could not do what was asked; the message says what and why."""


class HostUnreachable(ProviderError):
    """The environment's host cannot be asked now (its agent is down, or the network to it
    is): what was asked may be asked again later, and nothing should be marked failed for it."""


class Provider(Protocol):
    name: str

    @property
    def isolates_owners(self) -> bool:
        """Whether one owner's environments are kept from another's (sandboxes, a uid per
        owner). A fleet whose provider cannot serves one user only."""
        ...

    @property
    def isolation(self) -> str:
        """What isolation its environments get, in a sentence (for the operator and refusals)."""
        ...

    async def start(self, spec: EnvironmentSpec) -> None:
        """Create the environment and return once its SSH server accepts connections.

        Idempotent: starting an environment that already runs with this spec is a no-op."""
        ...

    async def assign(self, spec: EnvironmentSpec) -> None:
        """Give a running (warm) environment a new identity and owner; return once it uses them.

        Connections made under the previous identity are closed."""
        ...

    async def stop(self, environment_id: str) -> None:
        """Stop the environment and destroy its disk. Idempotent."""
        ...

    async def suspend(self, environment_id: str) -> None:
        """Stop the environment's agent and sandbox and keep its disk (its home) where it is,
        for a later `start` with the same spec (idle stop). Idempotent."""
        ...

    async def migrate(self, environment_id: str, host: str, blackout_seconds: float) -> None:
        """Move a running environment live to `host` (same region, same address). Its
        processes and memory carry on; its network attachment goes dark for about
        `blackout_seconds`. Returns once it answers on the new host."""
        ...

    async def running(self, environment_ids: list[str]) -> set[str]:
        """Which of these environments are up now (after a fleet restart, for example)."""
        ...

    async def backup(
        self,
        environment_id: str,
        order: BackupOrder,
        on_progress: Callable[[BackupProgress], None] | None = None,
    ) -> BackupResult:
        """Back the environment's home up (leeward.providers.restic) into the order's
        repository, where the home is; HostUnreachable if its host cannot be asked."""
        ...

    async def restore(self, environment_id: str, order: RestoreOrder) -> RestoreResult:
        """Before its first start: make the environment's home from a snapshot, complete or not
        at all. Idempotent: a home already there (restored by an earlier try) is kept."""
        ...

    async def restore_paths(self, environment_id: str, order: RestorePathsOrder) -> RestoreResult:
        """Write some paths of a snapshot into the running environment's home, as its owner,
        under `~/.leeward-restore/FOLDER/` (nothing of the home is overwritten)."""
        ...

    async def close(self) -> None:
        """The fleet is stopping. Environments outlive it unless the provider is configured to
        stop them (the embedded fleet of `leeward up`)."""
        ...
