"""The record of what was synced: per path, the content this agent last applied from the profile
or uploaded to it, and the profile version applied (`~/.local/state/leeward/sync.json`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from leeward.common.files import write_atomic
from leeward.common.profilefiles import OWN_STATE

log = logging.getLogger("leeward.agent.sync")

STATE_FILE = OWN_STATE + "/sync.json"


@dataclass
class SyncState:
    owner: str
    version: int = 0
    synced: dict[str, str] = field(default_factory=dict)
    """path -> sha256 of the content last applied here from the profile or uploaded to it."""
    fresh: bool = True
    """No record yet: this home has never been synced (files in it predate the profile)."""

    @classmethod
    def load(cls, home: Path, owner: str) -> SyncState:
        try:
            raw = json.loads((home / STATE_FILE).read_text())
            if raw.get("owner") != owner:
                return cls(owner)
            synced = {str(k): str(v) for k, v in dict(raw["synced"]).items()}
            return cls(owner, int(raw["version"]), synced, fresh=False)
        except FileNotFoundError:
            return cls(owner)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("profile sync: %s unreadable (%s); starting afresh", STATE_FILE, exc)
            return cls(owner)

    def save(self, home: Path) -> None:
        """Atomically: a crash leaves the old record or the new one."""
        path = home / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"owner": self.owner, "version": self.version, "synced": self.synced}
        write_atomic(path, json.dumps(body, indent=1, sort_keys=True))
        self.fresh = False
