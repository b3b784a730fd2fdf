"""Where Leeward keeps things on this machine (platformdirs; XDG_* and HOME are honoured)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "leeward"


@dataclass(frozen=True)
class Paths:
    """The client side's files. `home` is the user's home (tests point it at a temporary dir)."""

    config_dir: Path
    data_dir: Path
    state_dir: Path
    ssh_dir: Path

    @classmethod
    def default(cls) -> Paths:
        return cls(
            config_dir=Path(platformdirs.user_config_dir(APP)),
            data_dir=Path(platformdirs.user_data_dir(APP)),
            state_dir=Path(platformdirs.user_state_dir(APP)),
            ssh_dir=Path.home() / ".ssh" / APP,
        )

    @property
    def credentials(self) -> Path:
        """Fleet URL and token of the signed-in user (mode 0600)."""
        return self.config_dir / "credentials.toml"

    @property
    def embedded_dir(self) -> Path:
        """The embedded fleet of `leeward up`: its config, database, environments and logs."""
        return self.data_dir / "fleet"

    @property
    def identity(self) -> Path:
        """The user's SSH private key; the certificate is next to it as `-cert.pub`."""
        return self.ssh_dir / "id_ed25519"

    @property
    def certificate(self) -> Path:
        return self.ssh_dir / "id_ed25519-cert.pub"

    @property
    def ssh_config(self) -> Path:
        return self.ssh_dir / "config"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"
