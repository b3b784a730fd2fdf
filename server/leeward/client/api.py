"""The fleet's HTTP API as seen by a client: typed calls that return `leeward_protocol` models.

Every failure becomes a `FleetError` whose message is one sentence a person can act on: the
fleet's own `ErrorBody.message` when it sent one, otherwise what went wrong on the way.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from leeward.common.backoff import Backoff
from leeward.common.errors import FleetError
from leeward_protocol.backup import (
    Backup,
    BackupDetail,
    BackupList,
    BackupSchedule,
    DecommissionHost,
    HostDetail,
    Move,
    MoveRequest,
    Restore,
    RestoreRequest,
)
from leeward_protocol.dns import (
    DnsStatus,
    StopDns,
)
from leeward_protocol.fleet import (
    BackupStatus,
    Catalog,
    Certificate,
    CertificateRequest,
    CreateContainer,
    CreateDevserver,
    CreateHostToken,
    CreateToken,
    CreateUser,
    Environment,
    EnvironmentList,
    ExtendEnvironment,
    FleetEvent,
    Health,
    Host,
    HostList,
    HostTokenIssued,
    MigrateEnvironment,
    RegionLinks,
    SSHAuthorities,
    Token,
    User,
    WhoAmI,
)
from leeward_protocol.notify import (
    Announcement,
    AnnouncementList,
    Dismiss,
    EditAnnouncement,
    Inbox,
    NotificationList,
    PauseSink,
    PostAnnouncement,
    Preferences,
    SeenNotifications,
    SetPreferences,
    SinkList,
    SinkStatus,
)
from leeward_protocol.profile import (
    FeatureList,
    Profile,
    ProfileHistory,
    ProfileUpload,
    RestoreProfile,
    UploadResult,
)
from leeward_protocol.userconfig import UserConfig

M = TypeVar("M", bound=BaseModel)

DEFAULT_TIMEOUT = 30.0
CREATE_ATTEMPTS = 4
"""A create is retried with the same idempotency key this many times on a network error."""


class FleetUnreachable(FleetError):
    """Nothing answered at the fleet's URL (refused, timed out, DNS failed)."""


def unreachable_message(url: str) -> str:
    return f"Cannot reach the fleet at {url}: is it running? Try `leeward up`."


class FleetClient:
    """One fleet, one token. Use as `async with FleetClient(url, token) as fleet: ...`."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT):
        self.url = url.rstrip("/")
        self.token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0))
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FleetClient:
        headers = {"User-Agent": "leeward-cli"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self._session = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the API -------------------------------------------------------------------------------

    async def health(self) -> Health:
        return await self._call("GET", "/healthz", Health)

    async def whoami(self) -> WhoAmI:
        return await self._call("GET", "/v1/whoami", WhoAmI)

    async def catalog(self) -> Catalog:
        return await self._call("GET", "/v1/catalog", Catalog)

    async def features(self) -> FeatureList:
        return await self._call("GET", "/v1/features", FeatureList)

    async def authorities(self) -> SSHAuthorities:
        return await self._call("GET", "/v1/ssh/authorities", SSHAuthorities)

    async def certificate(self, public_key: str, hours: int | None = None) -> Certificate:
        body = CertificateRequest(public_key=public_key, hours=hours)
        return await self._call("POST", "/v1/ssh/certificate", Certificate, body=body.wire())

    async def environments(self) -> EnvironmentList:
        return await self._call("GET", "/v1/environments", EnvironmentList)

    async def environment(self, ref: str) -> Environment:
        return await self._call("GET", f"/v1/environments/{_segment(ref)}", Environment)

    async def create(
        self, request: CreateDevserver | CreateContainer, idempotency_key: str | None = None
    ) -> Environment:
        """Create an environment; a network error is retried with the same idempotency key, so
        the fleet creates it at most once."""
        key = idempotency_key or str(uuid.uuid4())
        backoff = Backoff(base=0.5, cap=4.0)
        for attempt in range(CREATE_ATTEMPTS):
            try:
                return await self._call(
                    "POST",
                    "/v1/environments",
                    Environment,
                    body=request.wire(),
                    headers={"Idempotency-Key": key},
                )
            except FleetUnreachable:
                if attempt == CREATE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(backoff.next())
        raise AssertionError("unreachable")  # pragma: no cover

    async def delete(self, ref: str) -> Environment:
        return await self._call("DELETE", f"/v1/environments/{_segment(ref)}", Environment)

    async def start(self, ref: str) -> Environment:
        """Start an environment stopped for being idle again (answered as it is when it is
        starting or up already)."""
        return await self._call("POST", f"/v1/environments/{_segment(ref)}/start", Environment)

    async def extend(self, ref: str, hours: int) -> Environment:
        body = ExtendEnvironment(hours=hours)
        return await self._call(
            "POST", f"/v1/environments/{_segment(ref)}/extend", Environment, body=body.wire()
        )

    async def events(
        self, after: int | None = None, *, idle_timeout: float = 45.0
    ) -> AsyncIterator[FleetEvent]:
        """The fleet's event stream (Server-Sent Events) from after event `after` (None: a
        `reset` first). Ends when the connection does; silence longer than `idle_timeout` (the
        fleet pings every 15 s) counts as a dead connection and raises FleetUnreachable."""
        if self._session is None:
            raise RuntimeError("FleetClient is used outside `async with`")
        headers = {"Accept": "text/event-stream"}
        if after is not None:
            headers["Last-Event-ID"] = str(after)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._timeout.connect, sock_read=idle_timeout
        )
        try:
            async with self._session.get(
                self.url + "/v1/events", headers=headers, timeout=timeout
            ) as response:
                if response.status >= 400:
                    raise _error_from(response.status, await response.text(), self.url)
                data: list[str] = []
                async for raw in response.content:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif not line and data:
                        try:
                            yield FleetEvent.model_validate(json.loads("\n".join(data)))
                        except (ValueError, ValidationError) as exc:
                            raise FleetError(
                                f"The fleet at {self.url} sent an event this client does not "
                                "understand: check that `leeward version` matches the fleet's."
                            ) from exc
                        data = []
        except (
            aiohttp.ClientConnectionError,
            aiohttp.ClientPayloadError,
            TimeoutError,
            OSError,
        ) as exc:
            raise FleetUnreachable(unreachable_message(self.url)) from exc

    async def hosts(self) -> HostList:
        return await self._call("GET", "/v1/admin/hosts", HostList)

    async def drain_host(self, name: str) -> Host:
        return await self._call("POST", f"/v1/admin/hosts/{_segment(name)}/drain", Host)

    async def activate_host(self, name: str) -> Host:
        return await self._call("POST", f"/v1/admin/hosts/{_segment(name)}/activate", Host)

    async def region_links(self, name: str, *, cut: bool) -> RegionLinks:
        action = "cut" if cut else "restore"
        return await self._call("POST", f"/v1/admin/regions/{_segment(name)}/{action}", RegionLinks)

    async def host_token(self, name: str, hours: int | None = None) -> HostTokenIssued:
        return await self._call(
            "POST",
            f"/v1/admin/hosts/{_segment(name)}/token",
            HostTokenIssued,
            body=CreateHostToken(hours=hours).wire(),
        )

    async def migrate(self, ref: str, host: str | None = None) -> Environment:
        body = MigrateEnvironment(host=host)
        return await self._call(
            "POST",
            f"/v1/admin/environments/{_segment(ref)}/migrate",
            Environment,
            body=body.wire(),
        )

    async def dns(self) -> DnsStatus:
        return await self._call("GET", "/v1/admin/dns", DnsStatus)

    async def stop_dns(self, *, black_hole: bool = False) -> DnsStatus:
        body = StopDns(black_hole=black_hole).wire()
        return await self._call("POST", "/v1/admin/dns/stop", DnsStatus, body=body)

    async def start_dns(self) -> DnsStatus:
        return await self._call("POST", "/v1/admin/dns/start", DnsStatus)

    async def create_user(self, request: CreateUser) -> User:
        return await self._call("POST", "/v1/admin/users", User, body=request.wire())

    async def create_token(self, request: CreateToken) -> Token:
        return await self._call("POST", "/v1/admin/tokens", Token, body=request.wire())

    # -- the profile -----------------------------------------------------------------------------

    async def profile(self, version: int | None = None) -> Profile:
        query = f"?version={version}" if version is not None else ""
        return await self._call("GET", f"/v1/profile{query}", Profile)

    async def profile_history(self, path: str | None = None) -> ProfileHistory:
        query = f"?path={_segment(path)}" if path else ""
        return await self._call("GET", f"/v1/profile/history{query}", ProfileHistory)

    async def profile_file(self, path: str, version: int | None = None) -> bytes:
        """One file's content, as the profile holds it."""
        query = f"?version={version}" if version is not None else ""
        quoted = "/".join(_segment(part) for part in path.split("/"))
        return await self._raw("GET", f"/v1/profile/files/{quoted}{query}")

    async def upload_profile(self, upload: ProfileUpload) -> UploadResult:
        return await self._call("POST", "/v1/profile/files", UploadResult, body=upload.wire())

    async def put_profile_config(self, config: UserConfig) -> Profile:
        body = config.model_dump(mode="json", exclude_defaults=True)
        return await self._call("PUT", "/v1/profile/config", Profile, body=body)

    async def restore_profile(self, request: RestoreProfile) -> Profile:
        return await self._call("POST", "/v1/profile/restore", Profile, body=request.wire())

    # -- plumbing ------------------------------------------------------------------------------

    # -- backups, restores and moves (leeward_protocol.backup) ------------------------------

    async def backups(self, ref: str) -> BackupList:
        return await self._call("GET", f"/v1/environments/{_segment(ref)}/backups", BackupList)

    async def backup_now(self, ref: str) -> Backup:
        return await self._call("POST", f"/v1/environments/{_segment(ref)}/backups", Backup)

    async def backup(self, ref: str, backup: int, path: str = "") -> BackupDetail:
        query = f"?path={_segment(path)}" if path else ""
        url = f"/v1/environments/{_segment(ref)}/backups/{backup}{query}"
        return await self._call("GET", url, BackupDetail)

    async def backup_schedule(self, ref: str, minutes: int | None) -> BackupStatus:
        body = BackupSchedule(interval_minutes=minutes).model_dump(mode="json", by_alias=True)
        url = f"/v1/environments/{_segment(ref)}/backup-schedule"
        return await self._call("PUT", url, BackupStatus, body=body)

    async def restore(self, ref: str, request: RestoreRequest) -> Restore:
        url = f"/v1/environments/{_segment(ref)}/restore"
        return await self._call("POST", url, Restore, body=request.wire())

    async def move(self, ref: str, request: MoveRequest) -> Move:
        url = f"/v1/environments/{_segment(ref)}/move"
        return await self._call("POST", url, Move, body=request.wire())

    async def move_status(self, move_id: str) -> Move:
        return await self._call("GET", f"/v1/moves/{_segment(move_id)}", Move)

    async def host(self, name: str) -> HostDetail:
        return await self._call("GET", f"/v1/admin/hosts/{_segment(name)}", HostDetail)

    async def decommission_host(self, name: str, request: DecommissionHost) -> HostDetail:
        url = f"/v1/admin/hosts/{_segment(name)}/decommission"
        return await self._call("POST", url, HostDetail, body=request.wire())

    # -- announcements and notifications (leeward_protocol.notify) -------------------------

    async def inbox(self, after: int = 0, digest: str = "", wait_seconds: float = 0) -> Inbox:
        """What the editor shows: a long poll of up to `wait_seconds` while nothing is newer
        than `after` and the digest is still `digest`. The call's own timeout is the wait plus
        the client's usual timeout (a long poll must not be cut by the short one)."""
        query = f"?after={after}&waitSeconds={wait_seconds:g}"
        if digest:
            query += f"&digest={_segment(digest)}"
        timeout = aiohttp.ClientTimeout(
            total=wait_seconds + (self._timeout.total or DEFAULT_TIMEOUT),
            connect=self._timeout.connect,
        )
        return await self._call("GET", f"/v1/inbox{query}", Inbox, limits=timeout)

    async def announcements(self) -> AnnouncementList:
        return await self._call("GET", "/v1/announcements", AnnouncementList)

    async def dismiss_announcement(self, announcement: int, revision: int) -> Announcement:
        body = Dismiss(revision=revision).wire()
        url = f"/v1/announcements/{announcement}/dismiss"
        return await self._call("POST", url, Announcement, body=body)

    async def post_announcement(self, request: PostAnnouncement) -> Announcement:
        return await self._call(
            "POST", "/v1/admin/announcements", Announcement, body=request.wire()
        )

    async def edit_announcement(self, announcement: int, request: EditAnnouncement) -> Announcement:
        url = f"/v1/admin/announcements/{announcement}"
        return await self._call("PATCH", url, Announcement, body=request.wire())

    async def withdraw_announcement(self, announcement: int) -> Announcement:
        url = f"/v1/admin/announcements/{announcement}"
        return await self._call("DELETE", url, Announcement)

    async def all_announcements(self, active: bool | None = None) -> AnnouncementList:
        query = "" if active is None else f"?active={str(active).lower()}"
        return await self._call("GET", f"/v1/admin/announcements{query}", AnnouncementList)

    async def notifications(self) -> NotificationList:
        return await self._call("GET", "/v1/notifications", NotificationList)

    async def notifications_seen(self, ids: list[int]) -> None:
        body = SeenNotifications(ids=ids).wire()
        await self._raw("POST", "/v1/notifications/seen", body=body)

    async def notification_preferences(self) -> Preferences:
        return await self._call("GET", "/v1/me/notifications", Preferences)

    async def set_notification_preferences(
        self, request: SetPreferences, user: str | None = None
    ) -> Preferences:
        """One's own; with `user`, an operator sets someone else's."""
        url = (
            "/v1/me/notifications"
            if user is None
            else f"/v1/admin/users/{_segment(user)}/notifications"
        )
        return await self._call("PUT", url, Preferences, body=request.wire())

    async def sinks(self) -> SinkList:
        return await self._call("GET", "/v1/admin/sinks", SinkList)

    async def pause_sink(self, name: str, request: PauseSink) -> SinkStatus:
        url = f"/v1/admin/sinks/{_segment(name)}"
        return await self._call("POST", url, SinkStatus, body=request.wire())

    async def _raw(
        self, method: str, path: str, *, body: Mapping[str, object] | None = None
    ) -> bytes:
        if self._session is None:
            raise RuntimeError("FleetClient is used outside `async with`")
        try:
            async with self._session.request(method, self.url + path, json=body) as response:
                content = await response.read()
                status = response.status
        except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
            raise FleetUnreachable(unreachable_message(self.url)) from exc
        if status >= 400:
            raise _error_from(status, content.decode(errors="replace"), self.url)
        return content

    async def _call(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        body: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        limits: aiohttp.ClientTimeout | None = None,
    ) -> M:
        if self._session is None:
            raise RuntimeError("FleetClient is used outside `async with`")
        # Only a given timeout is passed: aiohttp takes None for "no timeout at all".
        extra: dict[str, Any] = {} if limits is None else {"timeout": limits}
        try:
            async with self._session.request(
                method, self.url + path, json=body, headers=headers, **extra
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
            raise FleetUnreachable(unreachable_message(self.url)) from exc
        except aiohttp.InvalidURL as exc:
            raise FleetError(
                f"The fleet URL {self.url!r} is not a URL: sign in again with "
                "`leeward login --fleet http://HOST:PORT`."
            ) from exc
        if status >= 400:
            raise _error_from(status, text, self.url)
        try:
            return model.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            raise FleetError(
                f"The fleet at {self.url} sent an answer this client does not understand "
                f"({method} {path}): check that `leeward version` matches the fleet's."
            ) from exc


def _segment(ref: str) -> str:
    from urllib.parse import quote

    return quote(ref, safe="")


def _error_from(status: int, text: str, url: str) -> FleetError:
    answered = FleetError.from_answer(status, text)
    if answered is not None:
        return answered
    generic: dict[int, str] = {
        401: "The fleet did not accept your token: sign in again with `leeward login`.",
        403: "The fleet refused: your role does not allow this.",
        404: f"The fleet at {url} has no such resource: check the name, or the fleet URL.",
    }
    message = generic.get(
        status, f"The fleet at {url} failed with HTTP {status}: try again, or ask its operator."
    )
    return FleetError(message, status=status)


def wire_json(value: BaseModel | Any) -> str:
    """The camelCase JSON a command prints with `--json`: exactly what the fleet sent."""
    data = value.model_dump(mode="json", by_alias=True) if isinstance(value, BaseModel) else value
    return json.dumps(data, indent=2)
