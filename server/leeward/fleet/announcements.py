"""Announcements: banners an operator (or an operation, such as a decommission) posts, shown to
the people they concern where those people look (the editor, the SSH login, the CLI).

An announcement is scoped: every list of its scope that is given must match, and an all-empty
scope is everyone. The environment lists (regions, hosts, flavors, profiles) match a user
through their environments: an announcement concerns a user when one of their environments
matches every environment list given (and their name is in `users`, if that is given).

A change of text, severity or actions makes a new revision: a dismissal holds for the revision
it was made at, so an announcement whose content changed is shown again.

Plain async functions of a store session, the config and the time; the routes
(leeward.fleet.api.announcements) open the transactions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from pydantic import TypeAdapter
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.fleet.config import FleetConfig
from leeward.fleet.errors import Conflict, Invalid, NotFound
from leeward.fleet.store.models import (
    AnnouncementRow,
    DismissalRow,
    EnvironmentRow,
    HostRow,
    UserRow,
)
from leeward_protocol.fleet import EnvironmentState
from leeward_protocol.notify import (
    Action,
    ActionKind,
    ActionRequest,
    Announcement,
    EditAnnouncement,
    PostAnnouncement,
    Scope,
    Severity,
)

ACTIONS = TypeAdapter(list[Action])

CONCERNED_STATES = [
    s.value
    for s in (
        EnvironmentState.PROVISIONING,
        EnvironmentState.RUNNING,
        EnvironmentState.MIGRATING,
        EnvironmentState.STOPPED,
    )
]
"""An owner's environments that an announcement can concern: those they may use again."""

_ENVIRONMENT_LISTS = ("regions", "hosts", "flavors", "profiles")


# ---------------------------------------------------------------------------- writes


async def post(
    session: AsyncSession,
    config: FleetConfig,
    now: datetime,
    by: str,
    request: PostAnnouncement,
    *,
    source: str = "operator",
) -> Announcement:
    """Check the request against the fleet (every name in the scope exists, the end is ahead)
    and store it; nothing is stored when it is refused."""
    scope = Scope(
        regions=request.regions,
        hosts=request.hosts,
        flavors=request.flavors,
        profiles=request.profiles,
        users=request.users,
    )
    await _check_scope(session, config, scope)
    starts_at = request.starts_at or now
    _check_end(request.ends_at, starts_at, now)
    row = AnnouncementRow(
        text=request.text,
        severity=request.severity.value,
        scope=scope.model_dump_json(),
        starts_at=starts_at,
        ends_at=request.ends_at,
        actions=_actions_json(request.actions),
        revision=1,
        source=source,
        created_by=by,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return to_resource(row, now)


async def edit(
    session: AsyncSession, now: datetime, announcement_id: int, request: EditAnnouncement
) -> Announcement:
    """Change what is given; a change of text, severity or actions is a new revision."""
    row = await _get(session, announcement_id)
    if row.withdrawn_at is not None:
        raise Conflict(
            f"Announcement {announcement_id} was withdrawn; post a new one instead of editing it."
        )
    if "ends_at" in request.model_fields_set:
        _check_end(request.ends_at, row.starts_at, now)
        row.ends_at = request.ends_at
    changed = False
    if request.text is not None and request.text != row.text:
        row.text, changed = request.text, True
    if request.severity is not None and request.severity.value != row.severity:
        row.severity, changed = request.severity.value, True
    if request.actions is not None:
        actions = _actions_json(request.actions)
        if actions != row.actions:
            row.actions, changed = actions, True
    if changed:
        row.revision += 1
    row.updated_at = now
    await session.flush()
    return to_resource(row, now)


async def withdraw(session: AsyncSession, now: datetime, announcement_id: int) -> Announcement:
    """Take it down now (kept, for the record); withdrawing twice is the same as once."""
    row = await _get(session, announcement_id)
    if row.withdrawn_at is None:
        row.withdrawn_at = row.updated_at = now
    return to_resource(row, now)


async def withdraw_source(session: AsyncSession, now: datetime, source: str) -> int:
    """Withdraw every announcement an operation posted (e.g. `decommission:HOST` when the host
    is retired or its decommission cancelled); how many were."""
    rows = (
        await session.execute(
            select(AnnouncementRow).where(
                AnnouncementRow.source == source, AnnouncementRow.withdrawn_at.is_(None)
            )
        )
    ).scalars()
    count = 0
    for row in rows:
        row.withdrawn_at = row.updated_at = now
        count += 1
    return count


async def dismiss(
    session: AsyncSession,
    config: FleetConfig,
    now: datetime,
    user: str,
    announcement_id: int,
    revision: int,
) -> Announcement:
    """The user dismissed it at `revision` (the one they saw): it stays hidden for them until
    its content changes."""
    mine = {a.id: a for a in await for_user(session, config, now, user)}
    found = mine.get(announcement_id)
    if found is None:
        raise NotFound(
            f"No active announcement {announcement_id} concerns you; "
            "`leeward announcements` lists those that do."
        )
    if revision > found.revision:
        raise Conflict(
            f"Announcement {announcement_id} is at revision {found.revision}, not {revision}: "
            "dismiss the revision you were shown.",
            field="revision",
        )
    row = await session.get(DismissalRow, (user, announcement_id))
    if row is None:
        session.add(
            DismissalRow(
                user=user, announcement_id=announcement_id, revision=revision, dismissed_at=now
            )
        )
    else:
        row.revision, row.dismissed_at = max(row.revision, revision), now
    await session.flush()
    return found.model_copy(update={"dismissed": revision == found.revision})


# ---------------------------------------------------------------------------- reads


async def list_all(
    session: AsyncSession, now: datetime, *, active: bool | None = None
) -> list[Announcement]:
    """Every announcement, newest first (operators); `active`: only those shown now, or only
    those that are not."""
    query = select(AnnouncementRow).order_by(AnnouncementRow.id.desc())
    if active is not None:
        query = query.where(_active(now) if active else ~_active(now))
    rows = (await session.execute(query)).scalars()
    return [to_resource(row, now) for row in rows]


async def get(session: AsyncSession, now: datetime, announcement_id: int) -> Announcement:
    return to_resource(await _get(session, announcement_id), now)


async def for_user(
    session: AsyncSession, config: FleetConfig, now: datetime, user: str
) -> list[Announcement]:
    """The announcements active now that concern `user`, oldest first, each with `dismissed`
    (at its current revision) and `environments` (the user's environments it concerns)."""
    rows = await _active_rows(session, now)
    if not rows:
        return []
    envs = (
        (
            await session.execute(
                select(EnvironmentRow)
                .where(EnvironmentRow.owner == user, EnvironmentRow.state.in_(CONCERNED_STATES))
                .order_by(EnvironmentRow.created_at)
            )
        )
        .scalars()
        .all()
    )
    dismissed = {
        d.announcement_id: d.revision
        for d in (
            await session.execute(select(DismissalRow).where(DismissalRow.user == user))
        ).scalars()
    }
    found = []
    for row in rows:
        scope = Scope.model_validate_json(row.scope)
        if scope.users and user not in scope.users:
            continue
        matching = [e.name for e in envs if _environment_matches(scope, e)]
        if _has_environment_lists(scope) and not matching:
            continue
        found.append(
            to_resource(
                row,
                now,
                dismissed=dismissed.get(row.id, 0) >= row.revision,
                environments=matching,
            )
        )
    return found


async def for_environment(
    session: AsyncSession, now: datetime, env: EnvironmentRow
) -> list[Announcement]:
    """The announcements active now that concern one environment (its SSH login banner): its
    region, host, flavor and profile match every list given, and its owner is named if users
    are. Dismissals are the editor's: a login banner shows what is active."""
    found = []
    for row in await _active_rows(session, now):
        scope = Scope.model_validate_json(row.scope)
        if scope.users and env.owner not in scope.users:
            continue
        if _environment_matches(scope, env):
            shown = to_resource(row, now, environments=[env.name])
            shown.actions = [_on(action, env.name) for action in shown.actions]
            found.append(shown)
    return found


def _on(action: Action, name: str) -> Action:
    """An action for any environment, made this one's (`leeward move NAME` at its login is
    `leeward move box`)."""
    if action.kind == ActionKind.LINK or action.environment is not None:
        return action
    request = ActionRequest(kind=action.kind, label=action.label, environment=name)
    return action.model_copy(update={"environment": name, "command": _command(request)})


async def next_change(session: AsyncSession, now: datetime) -> datetime | None:
    """The next time after `now` an announcement starts or ends (the inbox's long poll wakes
    then, so that a scheduled one is shown on time); None if none is scheduled."""
    live = AnnouncementRow.withdrawn_at.is_(None)
    starts = (
        await session.execute(
            select(AnnouncementRow.starts_at)
            .where(live, AnnouncementRow.starts_at > now)
            .order_by(AnnouncementRow.starts_at)
            .limit(1)
        )
    ).scalar()
    ends = (
        await session.execute(
            select(AnnouncementRow.ends_at)
            .where(live, AnnouncementRow.ends_at > now)
            .order_by(AnnouncementRow.ends_at)
            .limit(1)
        )
    ).scalar()
    times = [t for t in (starts, ends) if t is not None]
    return min(times) if times else None


def to_resource(
    row: AnnouncementRow,
    now: datetime,
    *,
    dismissed: bool = False,
    environments: Sequence[str] = (),
) -> Announcement:
    return Announcement(
        id=row.id,
        text=row.text,
        severity=Severity(row.severity),
        scope=Scope.model_validate_json(row.scope),
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        actions=ACTIONS.validate_json(row.actions),
        revision=row.revision,
        source=row.source,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        withdrawn_at=row.withdrawn_at,
        active=is_active(row, now),
        dismissed=dismissed,
        environments=list(environments),
    )


def is_active(row: AnnouncementRow, now: datetime) -> bool:
    return (
        row.withdrawn_at is None
        and row.starts_at <= now
        and (row.ends_at is None or now < row.ends_at)
    )


# ---------------------------------------------------------------------------- the rules


def _active(now: datetime) -> ColumnElement[bool]:
    return (
        AnnouncementRow.withdrawn_at.is_(None)
        & (AnnouncementRow.starts_at <= now)
        & or_(AnnouncementRow.ends_at.is_(None), AnnouncementRow.ends_at > now)
    )


async def _active_rows(session: AsyncSession, now: datetime) -> list[AnnouncementRow]:
    query = select(AnnouncementRow).where(_active(now)).order_by(AnnouncementRow.id)
    return list((await session.execute(query)).scalars())


def _has_environment_lists(scope: Scope) -> bool:
    return any(getattr(scope, name) for name in _ENVIRONMENT_LISTS)


def _environment_matches(scope: Scope, env: EnvironmentRow) -> bool:
    """Every environment list given names this environment's region, host, flavor, profile."""
    checks = (
        (scope.regions, env.region),
        (scope.hosts, env.host),
        (scope.flavors, env.flavor),
        (scope.profiles, env.profile),
    )
    return all(not names or value in names for names, value in checks)


async def _check_scope(session: AsyncSession, config: FleetConfig, scope: Scope) -> None:
    """Every name in the scope must exist: a typo would otherwise reach nobody, silently."""
    known_hosts = {h.name for r in config.regions for h in r.hosts}
    known_hosts |= set((await session.execute(select(HostRow.name))).scalars())
    kinds = (
        ("region", "regions", scope.regions, {r.name for r in config.regions}),
        ("host", "hosts", scope.hosts, known_hosts),
        ("flavor", "flavors", scope.flavors, {f.name for f in config.flavors}),
        ("profile", "profiles", scope.profiles, {p.name for p in config.profiles}),
    )
    for kind, plural, given, known in kinds:
        for name in given:
            if name not in known:
                listed = ", ".join(sorted(known)) or "none"
                raise Invalid(
                    f"There is no {kind} '{name}': the {plural} are {listed}. "
                    "Name one of them in the scope.",
                    field=plural,
                )
    if scope.users:
        users = set(
            (await session.execute(select(UserRow.name).where(UserRow.name.in_(scope.users))))
            .scalars()
            .all()
        )
        for name in scope.users:
            if name not in users:
                raise Invalid(
                    f"There is no user '{name}' in the fleet; name users who have signed in.",
                    field="users",
                )


def _check_end(ends_at: datetime | None, starts_at: datetime, now: datetime) -> None:
    if ends_at is None:
        return
    if ends_at.tzinfo is None:
        raise Invalid(
            "Give the end with its time zone (e.g. 2026-12-24T18:00:00Z).", field="endsAt"
        )
    if ends_at <= now:
        raise Invalid(
            "The end is in the past: give an end that is still ahead, or withdraw it instead.",
            field="endsAt",
        )
    if ends_at <= starts_at:
        raise Invalid(
            "The end is not after the start: an announcement must end after it starts.",
            field="endsAt",
        )


def _actions_json(actions: list[ActionRequest]) -> str:
    made = [
        Action(
            kind=a.kind,
            label=a.label,
            url=a.url,
            environment=a.environment,
            command=_command(a),
        )
        for a in actions
    ]
    return json.dumps([a.model_dump(mode="json", by_alias=True) for a in made])


def _command(action: ActionRequest) -> str | None:
    """The same action in a terminal, for those who read the announcement there."""
    target = action.environment or "NAME"
    match action.kind:
        case ActionKind.MOVE:
            return f"leeward move {target}"
        case ActionKind.EXTEND:
            return f"leeward extend {target} --hours 24"
        case ActionKind.BACKUP_NOW:
            return f"leeward backup now {target}"
        case ActionKind.START:
            return f"leeward start {target}"
    return None


async def _get(session: AsyncSession, announcement_id: int) -> AnnouncementRow:
    row = await session.get(AnnouncementRow, announcement_id)
    if row is None:
        raise NotFound(
            f"No announcement {announcement_id}; `leeward admin announcements` lists them."
        )
    return row
