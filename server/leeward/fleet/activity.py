"""What keeps an environment alive (idle stop): each agent's heartbeat says how many SSH sessions
are open, how many of them are VS Code's, and how long ago the last input came; the fleet keeps
on the environment's row when something last kept it alive (`active_at`), what it was
(`kept_by`) and when it stops if nothing does again (`idle_stop_at`, from its kind's policy in
`[idle]`). The stop itself is leeward.fleet.idle's.

A heartbeat that finds nothing alive leaves `active_at` where it was: the environment's idle
time runs from its last activity, not from its last heartbeat."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, literal, null, or_
from sqlalchemy.sql.elements import ColumnElement

from leeward.fleet.config import FleetConfig
from leeward.fleet.config_notify import IdlePolicy
from leeward.fleet.resources import ENVIRONMENTS
from leeward_protocol.fleet import AgentHeartbeat, EnvironmentKind, Lifespan


def policy(config: FleetConfig, kind: str, lifespan: str, owner: str | None) -> IdlePolicy | None:
    """The idle policy of an environment of this kind; None where none applies: permanent
    devservers, and warm containers (nobody's yet)."""
    if owner is None:
        return None
    if kind == EnvironmentKind.CONTAINER:
        return config.idle.containers
    if lifespan == Lifespan.TEMPORARY:
        return config.idle.temporary_devservers
    return None


def stop_at(
    config: FleetConfig, kind: str, lifespan: str, owner: str | None, active_at: datetime
) -> datetime | None:
    """When an environment active at `active_at` stops for being idle; None: never."""
    chosen = policy(config, kind, lifespan, owner)
    if chosen is None or chosen.stop_after_minutes is None:
        return None
    return active_at + timedelta(minutes=chosen.stop_after_minutes)


def _count(n: int, one: str, many: str) -> str:
    return one if n == 1 else f"{n} {many}"


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{max(int(seconds), 0)} s"
    return f"{int(seconds // 60)} min"


def kept_by(config: FleetConfig, beat: AgentHeartbeat) -> str | None:
    """What, by this heartbeat, keeps the environment alive, in words (`2 SSH sessions`, `a VS
    Code connection`, `input 3 min ago`); None: nothing does."""
    editors = min(beat.editor_sessions, beat.sessions)
    shells = beat.sessions - editors
    said = []
    if editors:
        said.append(_count(editors, "a VS Code connection", "VS Code connections"))
    if shells:
        said.append(_count(shells, "an SSH session", "SSH sessions"))
    if said:
        return " and ".join(said)
    recent = config.idle.input_minutes * 60
    if beat.idle_seconds is not None and beat.idle_seconds < recent:
        return f"input {_ago(beat.idle_seconds)} ago"
    return None


def _policies(config: FleetConfig) -> list[tuple[ColumnElement[bool], float]]:
    """Which rows an idle stop applies to, each with its minutes (as SQL conditions)."""
    c = ENVIRONMENTS.c
    found: list[tuple[ColumnElement[bool], float]] = []
    containers = config.idle.containers.stop_after_minutes
    devservers = config.idle.temporary_devservers.stop_after_minutes
    if containers is not None:
        found.append(
            (and_(c.kind == EnvironmentKind.CONTAINER.value, c.owner.is_not(None)), containers)
        )
    if devservers is not None:
        temporary = and_(
            c.kind == EnvironmentKind.DEVSERVER.value,
            c.lifespan == Lifespan.TEMPORARY.value,
            c.owner.is_not(None),
        )
        found.append((temporary, devservers))
    return found


def _stop_at_column(config: FleetConfig, at: datetime) -> ColumnElement[Any]:
    """`idle_stop_at` for an environment active at `at`, by its row's kind, lifespan and owner
    (one UPDATE for any environment, without reading its row first)."""
    timestamp = ENVIRONMENTS.c.idle_stop_at.type
    whens = [
        (applies, literal(at + timedelta(minutes=minutes), timestamp))
        for applies, minutes in _policies(config)
    ]
    return case(*whens, else_=null()) if whens else null()


STARTED = "its start"
"""`kept_by` from an environment's start (or hand-over) until anything else keeps it alive."""


def heartbeat_values(config: FleetConfig, beat: AgentHeartbeat, now: datetime) -> dict[str, Any]:
    """What a heartbeat writes on its environment's row: it was seen; and, if something keeps
    it alive, that it was active now, by what, and its new stop time. Otherwise only an
    environment with no stop time yet that should have one (just started, or just handed
    over from a warm pool) starts its idle time now."""
    c = ENVIRONMENTS.c
    values: dict[str, Any] = {"last_seen_at": now}
    keeping = kept_by(config, beat)
    if keeping is not None:
        values.update(active_at=now, kept_by=keeping, idle_stop_at=_stop_at_column(config, now))
        return values
    policies = _policies(config)
    if not policies:
        return values
    starting = and_(c.idle_stop_at.is_(None), or_(*(applies for applies, _ in policies)))
    values.update(
        active_at=case((starting, literal(now, c.active_at.type)), else_=c.active_at),
        kept_by=case((starting, literal(STARTED)), else_=c.kept_by),
        idle_stop_at=case((starting, _stop_at_column(config, now)), else_=c.idle_stop_at),
    )
    return values
