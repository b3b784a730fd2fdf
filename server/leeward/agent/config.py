"""The agent's configuration: one JSON file (mode 0600) that the provider writes and rewrites.

It holds secrets (the host key, the agent token), so it is written atomically and readable by
its owner only. `reload` on the control socket re-reads it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from leeward.common.files import write_atomic
from leeward.common.validation import sentence


class AgentConfigError(Exception):
    """The config file is missing or invalid; the message says which and why."""


FIXED_ON_RELOAD = (
    "environment_id",
    "listen_address",
    "listen_port",
    "relay_port",
    "home",
    "control_socket",
    "log_file",
)
"""What a running agent cannot change on reload (its listeners, its disk, its own files): a
change of any of them means starting the agent again."""


class SandboxConfig(BaseModel):
    """The environment's sandbox (leeward.sandbox): its image and its owner's host uid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(description="The image's name and version, as status shows it.")
    rootfs: Path = Field(description="The image's root filesystem, bound read-only at /.")
    uid: int | None = Field(
        ge=1000, description="The owner's host uid; None while the environment has no owner."
    )
    cpus: float | None = Field(default=None, gt=0)
    memory_bytes: int | None = Field(default=None, gt=0)
    pids: int | None = Field(default=None, gt=0)
    own_network: bool = Field(
        default=False, description="A network of its own (slirp4netns); False: the host's."
    )
    egress: Path | None = Field(
        default=None,
        description="The network namespace its way out (slirp4netns) runs in; None: the agent's.",
    )


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    environment_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    fqdn: str = Field(min_length=1)
    owner: str | None = Field(
        description="The only user whose certificates are accepted; None (warm): nobody."
    )
    listen_address: str
    listen_port: int = Field(ge=1, le=65535)
    relay_port: int | None = Field(
        default=None, ge=1, le=65535, description="The resumable relay's port; None: no relay."
    )
    relay_buffer_mib: int = Field(
        default=8, ge=1, le=1024, description="Each relay session's replay buffer, in MiB."
    )
    relay_keep_seconds: float = Field(
        default=660.0,
        gt=0,
        description="How long a relay session without a link is kept (over the proxy's deadline).",
    )
    host_key: str = Field(description="OpenSSH private host key.")
    host_certificate: str = Field(description="The host key's certificate from the host CA.")
    user_ca: str = Field(description="OpenSSH public key of the fleet's user CA.")
    fleet_url: str = Field(description="Base URL of the fleet API, for heartbeats.")
    agent_token: str = Field(description="Bearer token for the fleet's agent endpoints.")
    heartbeat_seconds: float = Field(gt=0)
    home: Path = Field(description="The environment's home directory (its disk).")
    control_socket: Path = Field(description="Unix socket for the provider (status, reload).")
    log_file: Path
    sandbox: SandboxConfig | None = Field(
        default=None,
        description="Run every session in a sandbox; None: on the host, as the agent's user.",
    )

    def fixed_changes(self, new: AgentConfig) -> list[str]:
        """The fields of `FIXED_ON_RELOAD` that `new` changes: a reload cannot apply them."""
        changed = [f for f in FIXED_ON_RELOAD if getattr(new, f) != getattr(self, f)]
        if (self.sandbox is None) != (new.sandbox is None):
            changed.append("sandbox")
        return changed

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        try:
            raw = path.read_text()
        except OSError as exc:
            raise AgentConfigError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise AgentConfigError(f"{path}: {sentence(exc, '(top level)')}") from None

    def write(self, path: Path) -> None:
        """Replace `path` atomically with this config, readable by its owner only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, self.model_dump_json(indent=2), mode=0o600)
