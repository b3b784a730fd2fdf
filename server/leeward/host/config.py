"""A host agent's configuration (`host.toml`): which host it is, which fleet it serves and the
key it pins, where its API listens, and where environments live on this machine."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from leeward.common.hostauth import load_public
from leeward.common.validation import load_toml


class HostConfigError(Exception):
    """The host's config cannot be used; one sentence that says what to fix."""


class HostAgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$", description="The host's name.")
    fleet_url: str = Field(pattern=r"^https?://", description="Where this host reaches its fleet.")
    fleet_key: str = Field(description="The fleet's public command key, ed25519:BASE64: pinned.")
    token_file: Path = Field(description="The host token, alone, in a file of mode 0600.")
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=0, ge=0, le=65535, description="0: any free port.")
    advertise_url: str | None = Field(
        default=None, description="How the fleet reaches this API; http://HOST:PORT if absent."
    )
    data_dir: Path = Field(description="Environments' directories on this machine.")
    image_cache: Path | None = None
    sandboxes: Literal["auto", "on", "off"] = "auto"
    netns: Path | None = Field(
        default=None,
        description="The local fabric's namespace of this host (/run/netns/PREFIX-HOST): its API "
        "listens there, its heartbeats leave from there, its environments run there.",
    )
    fabric_prefix: str | None = Field(
        default=None, description="With netns: the fabric's prefix, for routing addresses here."
    )
    fabric_transit: str | None = None
    heartbeat_seconds: float = Field(default=5.0, gt=0, le=3600)
    stop_environments_on_exit: bool = Field(
        default=False,
        description="Stop every environment when the host agent stops (the embedded fleet). "
        "Otherwise environments outlive it, as VMs outlive their control plane.",
    )

    def token(self) -> str:
        """The host token, from a file only its owner can read."""
        try:
            mode = self.token_file.stat().st_mode
            text = self.token_file.read_text().strip()
        except OSError as exc:
            raise HostConfigError(
                f"cannot read the token file {self.token_file}: {exc.strerror}"
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise HostConfigError(
                f"the token file {self.token_file} is readable by others (mode "
                f"{stat.S_IMODE(mode):04o}): run `chmod 600 {self.token_file}`"
            )
        if not text:
            raise HostConfigError(f"the token file {self.token_file} is empty")
        return text


def load_host_config(path: Path) -> HostAgentConfig:
    config = load_toml(path, HostAgentConfig, HostConfigError)
    try:
        load_public(config.fleet_key)
    except ValueError as exc:
        raise HostConfigError(f"{path}: fleet_key: {exc}") from None
    if config.netns is not None and config.fabric_prefix is None:
        raise HostConfigError(f"{path}: netns needs fabric_prefix (the fabric's prefix)")
    base = path.resolve().parent
    for field in ("data_dir", "token_file"):
        value = getattr(config, field)
        if not value.is_absolute():
            setattr(config, field, base / value)
    return config
