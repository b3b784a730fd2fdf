"""Fixtures for relay tests: the agent tests' CA, specs, kit and local provider, and the
`leeward` console script (whose `proxy` is ssh's ProxyCommand)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leeward.client.credentials import Credentials, store_credentials
from tests.agent.conftest import ca, fleet, kit, provider
from tests.cli.sandbox import LEEWARD as _LEEWARD_PATH
from tests.conftest import Api, ssh_access

LEEWARD = str(_LEEWARD_PATH)

__all__ = ["LEEWARD", "ca", "fleet", "kit", "provider", "proxied"]


async def proxied(fleet_url: str, api: Api, home: Path, alias: str) -> tuple[Any, dict[str, str]]:
    """alice's machine under `home`: her ssh files, with `leeward proxy` as the ProxyCommand of
    `alias` (as `config-ssh` writes it), and her credentials for `fleet_url`; those paths, and the
    environment (HOME, XDG dirs) her ssh runs with."""
    paths = await ssh_access(api, home, "alice")
    xdg = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "xdg-config"),
        "XDG_STATE_HOME": str(home / "xdg-state"),
    }
    store_credentials(
        home / "xdg-config" / "leeward" / "credentials.toml",
        Credentials(fleet=fleet_url, token=api.token or ""),
    )
    proxy = f"{LEEWARD} proxy %n --known-hosts {paths.known_hosts}"
    config = paths.ssh_config.read_text().replace(
        f"Host {alias} ", f"Host {alias} \n    ProxyCommand {proxy}\nHost {alias} "
    )
    paths.ssh_config.write_text(config)
    return paths, xdg
