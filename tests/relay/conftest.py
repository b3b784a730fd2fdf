"""Fixtures for relay tests: the agent tests' CA, specs, kit and local provider, and the
`leeward` console script (whose `proxy` is ssh's ProxyCommand)."""

from __future__ import annotations

from tests.agent.conftest import ca, fleet, kit, provider
from tests.cli.sandbox import LEEWARD as _LEEWARD_PATH

LEEWARD = str(_LEEWARD_PATH)

__all__ = ["LEEWARD", "ca", "fleet", "kit", "provider"]
