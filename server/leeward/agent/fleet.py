"""The agent's client for the fleet: the agent API (`/v1/agent/...`) of one environment, each
request and each answer a `leeward_protocol` model. Heartbeats, reports (setup items, sync
status), and the owner's profile: the profile with its setup steps, contents by hash, the long
poll for new versions, uploads.

The standard library's client, in a daemon thread: the agent makes a few requests a minute,
and an async HTTP library would cost every environment its memory. For the same reason the
profile's models are imported by the calls that use them: a warm container (no owner) only
beats, and never loads them. Every failure (no answer in time, refused, not 2xx, not JSON, not
the model expected) is one `FleetError` whose message says what happened.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ValidationError

from leeward.common.errors import FleetError
from leeward.common.threads import in_daemon_thread
from leeward.common.validation import sentence
from leeward_protocol.fleet import (
    AgentHeartbeat,
    AgentReport,
    HeartbeatAck,
    SetupItem,
    SyncStatus,
)

if TYPE_CHECKING:
    from leeward_protocol.notify import Announcement
    from leeward_protocol.profile import AgentProfile, ProfileUpload, UploadResult

M = TypeVar("M", bound=BaseModel)

MAX_ANSWER_BYTES = 64 << 20
"""The largest answer read (a batch of profile blobs is the biggest the fleet sends)."""
REQUEST_SECONDS = 15.0
WAIT_SECONDS = 40.0
"""The deadline of one long poll (the fleet holds it about 25 s)."""
BLOB_BATCH = 200
"""Hashes asked for in one request (at most `leeward_protocol.profile.MAX_BLOBS`)."""


@dataclass(frozen=True)
class FleetEndpoint:
    """Where the fleet is and who this agent is to it: from the agent's config."""

    url: str
    token: str
    environment_id: str


class AgentFleet:
    """The fleet's agent API, for one environment. `endpoint()` is read at each request (a
    reload may change the fleet's URL and the token); the environment's id goes where each
    route wants it (the body of a heartbeat or a report, the query of the profile's routes)."""

    def __init__(self, endpoint: Callable[[], FleetEndpoint]) -> None:
        self._endpoint = endpoint

    async def heartbeat(
        self,
        *,
        sessions: int,
        agent_version: str,
        within: float,
        editor_sessions: int = 0,
        idle_seconds: float | None = None,
    ) -> HeartbeatAck:
        """Alive, with `sessions` SSH connections open (`editor_sessions` of them VS Code's)
        and the last input `idle_seconds` ago: what keeps it from an idle stop. The fleet's
        answer says how often."""
        end = self._endpoint()
        beat = AgentHeartbeat(
            environment_id=end.environment_id,
            sessions=sessions,
            agent_version=agent_version,
            editor_sessions=min(editor_sessions, sessions),
            idle_seconds=None if idle_seconds is None else max(idle_seconds, 0.0),
        )
        url = _url(end, "/v1/agent/heartbeat")
        return parse(HeartbeatAck, await request_json("POST", url, end.token, beat.wire(), within))

    async def report(
        self,
        *,
        setup: Sequence[SetupItem] | None = None,
        sync: SyncStatus | None = None,
        within: float = REQUEST_SECONDS,
    ) -> None:
        """The setup items, the sync status, or both (what is not given stays as it is)."""
        end = self._endpoint()
        body = report_body(end.environment_id, setup=setup, sync=sync)
        await request_json("POST", _url(end, "/v1/agent/report"), end.token, body, within)

    async def profile(self, *, within: float = REQUEST_SECONDS) -> AgentProfile:
        """The owner's profile, the tracked paths and the setup steps."""
        from leeward_protocol.profile import AgentProfile

        return parse(AgentProfile, await self._profile_route("GET", "", None, within))

    async def blobs(self, sha256: list[str]) -> dict[str, bytes]:
        """The contents with these hashes (those the fleet has), a batch per request."""
        from leeward_protocol.profile import BlobRequest, Blobs

        got: dict[str, bytes] = {}
        for start in range(0, len(sha256), BLOB_BATCH):
            batch = BlobRequest(sha256=sha256[start : start + BLOB_BATCH])
            answer = await self._profile_route("POST", "/blobs", batch.wire(), REQUEST_SECONDS)
            for sha, text in parse(Blobs, answer).blobs.items():
                got[sha] = base64.b64decode(text)
        return got

    async def wait(self, after: int) -> int:
        """The profile's latest version, once it is past `after` or the fleet's hold is over."""
        from leeward_protocol.profile import ProfileWait

        answer = await self._profile_route("GET", "/wait", None, WAIT_SECONDS, after=after)
        return parse(ProfileWait, answer).version

    async def upload(self, upload: ProfileUpload) -> UploadResult:
        """Edits made here, stored in one new version (refusals and conflicts left out)."""
        from leeward_protocol.profile import UploadResult

        answer = await self._profile_route("POST", "", upload.wire(), 2 * REQUEST_SECONDS)
        return parse(UploadResult, answer)

    async def announcements(self, *, within: float) -> list[Announcement]:
        """The announcements shown now that concern this environment (its login banner)."""
        from leeward_protocol.notify import AnnouncementList

        end = self._endpoint()
        url = _url(end, "/v1/agent/announcements", environment=end.environment_id)
        answer = await request_json("GET", url, end.token, None, within)
        return parse(AnnouncementList, answer).announcements

    async def _profile_route(
        self, method: str, sub: str, body: object | None, within: float, **query: object
    ) -> object:
        end = self._endpoint()
        url = _url(end, "/v1/agent/profile" + sub, environment=end.environment_id, **query)
        return await request_json(method, url, end.token, body, within)


def _url(end: FleetEndpoint, path: str, **query: object) -> str:
    url = end.url.rstrip("/") + path
    if query:
        url += "?" + "&".join(f"{k}={quote(str(v))}" for k, v in query.items())
    return url


def report_body(
    environment_id: str,
    *,
    setup: Sequence[SetupItem] | None = None,
    sync: SyncStatus | None = None,
) -> dict[str, object]:
    """An `AgentReport` as it goes on the wire. A field not given is left out rather than sent
    as null: the fleet reads both as "unchanged", and an absent field says so plainly."""
    report = AgentReport(
        environment_id=environment_id,
        setup=list(setup) if setup is not None else None,
        sync=sync,
    )
    return {key: value for key, value in report.wire().items() if value is not None}


def parse(model: type[M], answer: object) -> M:
    """`answer` as a `model`, or a FleetError saying why it is not one."""
    try:
        return model.model_validate(answer)
    except ValidationError as exc:
        detail = sentence(exc, "the answer as a whole")
        raise FleetError(f"the fleet's answer is not a {model.__name__}: {detail}") from None


async def request_json(
    method: str, url: str, token: str, body: object | None, within: float
) -> object:
    """`method` `url` with `body` as JSON (None: no body); the decoded JSON answer (None when
    empty). FleetError on anything but 2xx, or no complete answer `within` seconds."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FleetError(f"fleet URL {url!r} is not http(s)://host[:port]/...")
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=data, method=method, headers=headers
    )

    def exchange() -> bytes:
        with urllib.request.urlopen(request, timeout=within) as answer:  # noqa: S310
            return bytes(answer.read(MAX_ANSWER_BYTES))

    try:
        async with asyncio.timeout(within + 1):
            raw = await in_daemon_thread(exchange, "fleet-request")
    except urllib.error.HTTPError as exc:
        text = exc.read(4096).decode(errors="replace")
        answered = FleetError.from_answer(exc.code, text)
        detail = answered.message if answered is not None else text[:300]
        raise FleetError(
            f"the fleet answered {exc.code}: {detail}",
            status=exc.code,
            code=answered.code if answered is not None else None,
            field=answered.field if answered is not None else None,
        ) from None
    except TimeoutError:
        raise FleetError(f"no answer from {parts.netloc} within {within:g} s") from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        raise FleetError(f"cannot reach {parts.netloc}: {reason}") from None
    except OSError as exc:
        raise FleetError(f"cannot reach {parts.netloc}: {exc.strerror or exc}") from None
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        raise FleetError("the fleet's answer is not JSON") from None
