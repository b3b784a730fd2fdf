"""A fleet in a box for agent tests: a CA, specs, and OpenSSH clients.

Every test gets throwaway ssh configs and known_hosts in its tmp_path, with the fleet's
`@cert-authority` line and `HostKeyAlias`: the machine's own ~/.ssh never matters, and host keys
are always verified.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from leeward.fleet.ca import CertificateAuthority
from leeward.providers.base import EnvironmentSpec, Identity
from leeward_protocol.fleet import EnvironmentKind, Hardware
from tests.conftest import free_endpoint

ZONE = "leeward.test"


@dataclass
class Fleet:
    ca: CertificateAuthority
    tmp: Path
    fleet_url: str = "http://127.0.0.1:9"  # nothing listens: heartbeats fail quietly

    def identity(self, env_id: str, fqdn: str, owner: str | None) -> Identity:
        key, cert = self.ca.issue_host_identity(
            [fqdn, env_id], datetime.now(UTC), timedelta(days=1)
        )
        return Identity(
            owner=owner,
            host_key=key,
            host_certificate=cert,
            agent_token=secrets.token_urlsafe(16),
        )

    def spec(self, owner: str | None = "alice", **changes: object) -> EnvironmentSpec:
        env_id = "e-" + secrets.token_hex(5)
        name = "box-" + secrets.token_hex(3)
        fqdn = f"{name}.test-region.{ZONE}"
        address, port = free_endpoint()
        spec = EnvironmentSpec(
            id=env_id,
            name=name,
            fqdn=fqdn,
            kind=EnvironmentKind.DEVSERVER,
            region="test-region",
            host="test-h1",
            address=address,
            ssh_port=port,
            hardware=Hardware(cpus=2, memory_gib=4),
            user_ca=self.ca.user_ca_public,
            fleet_url=self.fleet_url,
            heartbeat_seconds=30.0,
            identity=self.identity(env_id, fqdn, owner),
        )
        return replace(spec, **changes)  # type: ignore[arg-type]

    def reassigned(self, spec: EnvironmentSpec, owner: str | None) -> EnvironmentSpec:
        return replace(spec, identity=self.identity(spec.id, spec.fqdn, owner))


@dataclass
class User:
    name: str
    key: Path
    cert: Path


@dataclass
class SSH:
    """OpenSSH clients for one environment, configured as `leeward` would configure them."""

    config: Path
    alias: str = "box"

    def argv(self, tool: str, *args: str) -> list[str]:
        return [tool, "-F", str(self.config), *args]

    async def run(
        self, tool: str, *args: str, input: bytes | None = None, timeout: float = 20
    ) -> subprocess.CompletedProcess[bytes]:
        return await asyncio.to_thread(
            subprocess.run,
            self.argv(tool, *args),
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )


class Kit:
    def __init__(self, fleet: Fleet, tmp: Path) -> None:
        self.fleet = fleet
        self.tmp = tmp
        self.known_hosts = tmp / "known_hosts"
        self.known_hosts.write_text(fleet.ca.known_hosts_line(ZONE) + "\n")

    def user(
        self,
        name: str,
        principal: str | None = None,
        now: datetime | None = None,
        hours: int = 1,
        ca: CertificateAuthority | None = None,
    ) -> User:
        key = self.tmp / f"id_{name}_{secrets.token_hex(3)}"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
            check=True,
        )
        cert, _, _ = (ca or self.fleet.ca).sign_user_key(
            key.with_suffix(".pub").read_text(), principal or name, now or datetime.now(UTC), hours
        )
        cert_path = Path(f"{key}-cert.pub")
        cert_path.write_text(cert + "\n")
        return User(name=name, key=key, cert=cert_path)

    def ssh(self, spec: EnvironmentSpec, user: User, login: str | None = None) -> SSH:
        config = self.tmp / f"ssh_config_{secrets.token_hex(3)}"
        config.write_text(
            "Host box\n"
            f"  HostName {spec.address}\n"
            f"  Port {spec.ssh_port}\n"
            f"  User {login or user.name}\n"
            f"  HostKeyAlias {spec.fqdn}\n"
            "  StrictHostKeyChecking yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            f"  GlobalKnownHostsFile {self.known_hosts}\n"
            "  UpdateHostKeys no\n"
            f"  IdentityFile {user.key}\n"
            f"  CertificateFile {user.cert}\n"
            "  IdentitiesOnly yes\n"
            "  BatchMode yes\n"
            "  ConnectTimeout 5\n"
            "  ControlMaster no\n"
            "  ForwardAgent no\n"
            "  LogLevel ERROR\n"
        )
        return SSH(config)
