"""A profile version into the home: the plan (what happens to each path, decided before
anything is written) and carrying it out, by the rule in `leeward.agent.sync`'s docstring. Both
are file work, run in a thread."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from leeward.agent.sync.home import (
    UnsafePath,
    conflict_copy,
    keep_theirs,
    local_sha,
    remove_file,
    write_file,
)
from leeward.common.profilefiles import check_path
from leeward_protocol.fleet import SyncConflict
from leeward_protocol.profile import Profile, ProfileFile

log = logging.getLogger("leeward.agent.sync")


@dataclass
class Plan:
    write: list[ProfileFile] = field(default_factory=list)
    conflict: list[ProfileFile] = field(default_factory=list)
    keep_aside: list[ProfileFile] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    record: dict[str, str] = field(default_factory=dict)
    forget: list[str] = field(default_factory=list)
    seen: dict[str, str | None] = field(default_factory=dict)


def plan_for(home: Path, profile: Profile, synced: dict[str, str], fresh: bool) -> Plan:
    """What applying `profile` does to each path (nothing written yet)."""
    plan = Plan()
    for f in profile.files:
        if check_path(f.path) is not None:
            log.warning("profile sync: the profile holds %r, not a path it may hold", f.path)
            continue
        mine = local_sha(home, f.path)
        last = synced.get(f.path)
        plan.seen[f.path] = mine
        if mine == f.sha256:
            plan.record[f.path] = f.sha256
        elif last == f.sha256:
            pass  # theirs is what we last synced: the difference is ours, to upload
        elif mine is None or mine == last:
            plan.write.append(f)
        elif fresh and last is None:
            plan.keep_aside.append(f)
        else:
            plan.conflict.append(f)
    listed = {f.path for f in profile.files}
    for path in synced:
        if path in listed:
            continue
        mine = local_sha(home, path)
        if mine is not None and mine == synced[path]:
            plan.delete.append(path)
        else:
            plan.forget.append(path)  # edited here (or gone): ours goes back in as new
    return plan


def carry_out(
    home: Path,
    synced: dict[str, str],
    plan: Plan,
    blobs: dict[str, bytes],
    now: datetime,
    name: str,
) -> list[SyncConflict]:
    """Write what `plan` says, with the contents in `blobs`, and update `synced` to match; the
    conflicts it made. `name` is this environment's, where what was here before comes from."""
    conflicts: list[SyncConflict] = []
    for path, sha in plan.record.items():
        synced[path] = sha
    for path in plan.forget:
        synced.pop(path, None)
    for f in plan.keep_aside:
        # A home that predates the profile: the profile wins, what was here is kept aside.
        try:
            copy = conflict_copy(home, f.path, (home / f.path).read_bytes(), name, now)
            log.info("profile sync: %s was here before the profile; kept as %s", f.path, copy)
        except (OSError, UnsafePath) as exc:
            log.warning("profile sync: cannot keep %s aside: %s", f.path, exc)
            continue
        plan.write.append(f)
    for f in plan.write:
        seen = plan.seen.get(f.path)
        now_sha = local_sha(home, f.path)
        if now_sha != seen and now_sha != f.sha256 and f not in plan.keep_aside:
            plan.conflict.append(f)  # edited while we were fetching: a conflict after all
            continue
        try:
            write_file(home, f.path, blobs[f.sha256], f.mode, f.modified_at)
        except (OSError, UnsafePath) as exc:
            log.warning("profile sync: cannot write %s: %s", f.path, exc)
            continue
        synced[f.path] = f.sha256
    for f in plan.conflict:
        try:
            conflict = keep_theirs(home, f.path, blobs[f.sha256], f.source, f.version, now)
        except (OSError, UnsafePath) as exc:
            log.warning("profile sync: cannot write the other version of %s: %s", f.path, exc)
            continue
        log.info(
            "profile sync: %s was edited here and in %s; theirs is %s",
            f.path,
            f.source,
            conflict.copy_path,
        )
        synced[f.path] = f.sha256
        conflicts.append(conflict)
    for path in plan.delete:
        if local_sha(home, path) == synced.get(path):
            try:
                remove_file(home, path)
            except OSError as exc:
                log.warning("profile sync: cannot remove %s: %s", path, exc)
                continue
        synced.pop(path, None)
    return conflicts
