"""Where notifications go, one function per sink that pushes: email (SMTP with aiosmtplib), chat
(apprise, to the configured URLs) and a task tracker (a JSON webhook). The editor has no push:
its delivery is sent when the editor reports the notification seen (api/notify.py).

Each send either returns (sent) or raises `SendFailed` with a sentence for the delivery's
reason. Each carries the notification's identity so that a receiver can drop a second copy
(the delivery loop may send again after a fleet was killed between sending and recording it):
the `Leeward-Notification-Id` header on webhooks, a fixed Message-ID on email."""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from leeward.fleet.config_notify import NotifyConfig, SmtpConfig
from leeward.fleet.notify.templates import render
from leeward_protocol.notify import NotificationKind, SinkName

IDEMPOTENCY_HEADER = "Leeward-Notification-Id"


class SendFailed(Exception):
    """A sink refused or could not be reached; the message is the delivery's reason."""


@dataclass(frozen=True)
class Outgoing:
    """One notification on its way to one sink: what every sink needs to send it."""

    notification_id: int
    user: str
    kind: NotificationKind
    title: str
    body: str
    environment: str | None
    values: dict[str, Any]
    email: str | None
    zone: str
    actions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def identity(self) -> str:
        """The same for every attempt of this notification, and unique across fleets."""
        return f"{self.notification_id}@{self.zone}"


async def send(sink: SinkName, outgoing: Outgoing, config: NotifyConfig, seconds: float) -> None:
    """Send `outgoing` to `sink`, giving up after `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            if sink == SinkName.EMAIL:
                await send_email(outgoing, config.email)
            elif sink == SinkName.CHAT:
                await send_chat(outgoing, config.chat, seconds)
            elif sink == SinkName.TRACKER:
                await send_tracker(outgoing, config.tracker_url)
            else:
                raise SendFailed(f"The {sink} sink is not sent by the delivery loop.")
    except TimeoutError:
        raise SendFailed(f"The {sink} sink did not answer within {seconds:.0f} s.") from None


async def send_email(outgoing: Outgoing, smtp: SmtpConfig | None) -> None:
    """A plain-text email whose Message-ID is the notification's, so that a mail system or a
    reader can drop a copy sent again after a fleet restart."""
    import aiosmtplib

    if smtp is None:
        raise SendFailed("The fleet has no email sink configured ([notify.email]).")
    if not outgoing.email:
        raise SendFailed(
            f"{outgoing.user} has no email address: set one with "
            "`leeward notifications prefs --email ADDRESS`."
        )
    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = outgoing.email
    message["Subject"] = outgoing.title
    message["Message-ID"] = f"<leeward-notification-{outgoing.identity}>"
    message[IDEMPOTENCY_HEADER] = outgoing.identity
    message.set_content(render(outgoing.kind, outgoing.values).text + "\n")
    try:
        await aiosmtplib.send(
            message,
            hostname=smtp.host,
            port=smtp.port,
            username=smtp.username,
            password=smtp.password,
            start_tls=smtp.starttls,
            timeout=smtp.timeout_seconds,
        )
    except aiosmtplib.SMTPException as exc:
        raise SendFailed(f"SMTP server {smtp.host}:{smtp.port}: {exc}") from None
    except OSError as exc:
        raise SendFailed(f"SMTP server {smtp.host}:{smtp.port} unreachable: {exc}") from None


_chat_lock = asyncio.Lock()
"""apprise logs why a post failed on its logger; one chat send at a time, so that each send
reads its own failure."""


async def send_chat(outgoing: Outgoing, urls: list[str], seconds: float) -> None:
    """Post to every configured apprise URL (Slack, Teams, Matrix, a JSON webhook...).

    apprise is synchronous (requests) and loads its plugins on first use, so all of it runs in
    a thread, with its own connect and read timeouts inside ours; the idempotency header goes
    on as an apprise `+HEADER` parameter (webhook URLs such as `json://` send it; chat services
    ignore it). apprise tells why a post failed only in its log: one chat send at a time
    captures it."""
    if not urls:
        raise SendFailed("The fleet has no chat URLs configured ([notify] chat).")
    each = max(1.0, seconds / 2)
    tagged = [
        f"{url}{'&' if '?' in url else '?'}+{IDEMPOTENCY_HEADER}={outgoing.identity}"
        f"&cto={each}&rto={each}"
        for url in urls
    ]
    async with _chat_lock:
        failure = await asyncio.to_thread(_post_chat, tagged, outgoing.title, outgoing.body)
    if failure:
        raise SendFailed(failure)


def _post_chat(urls: list[str], title: str, body: str) -> str:
    """In a thread: post with apprise; why it failed, or "" when every URL took it."""
    with warnings.catch_warnings():
        # apprise's plugins import modules Python deprecates (imghdr): not the fleet's concern.
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise

        notifier = apprise.Apprise()
        for number, url in enumerate(urls, 1):
            if not notifier.add(url):
                return f"apprise does not understand chat URL {number} of [notify] chat."
        with apprise.LogCapture(level=logging.WARNING) as log:  # type: ignore[no-untyped-call]
            ok = notifier.notify(title=title, body=body)
            logged = log.getvalue()
    if ok:
        return ""
    return "Chat post failed: " + (" ".join(logged.split())[-300:] or "apprise gave no reason")


async def send_tracker(outgoing: Outgoing, url: str | None) -> None:
    """POST {title, body, environment, user, kind, url?} to the tracker's webhook, which opens
    a task; any 2xx is success."""
    if url is None:
        raise SendFailed("The fleet has no tracker configured ([notify] tracker_url).")
    task: dict[str, Any] = {
        "title": outgoing.title,
        "body": outgoing.body,
        "environment": outgoing.environment,
        "user": outgoing.user,
        "kind": outgoing.kind.value,
    }
    links = [a["url"] for a in outgoing.actions if a.get("url")]
    if links:
        task["url"] = links[0]
    await post_json(url, task, {IDEMPOTENCY_HEADER: outgoing.identity})


async def post_json(url: str, payload: dict[str, Any], headers: dict[str, str]) -> None:
    try:
        async with (
            aiohttp.ClientSession(trust_env=False) as http,
            http.post(
                url,
                data=json.dumps(payload),
                headers={"Content-Type": "application/json", **headers},
            ) as response,
        ):
            if response.status >= 300:
                text = (await response.text())[:200]
                raise SendFailed(
                    f"{_redacted(url)} answered {response.status} {response.reason}: {text}"
                )
    except aiohttp.ClientError as exc:
        raise SendFailed(f"{_redacted(url)} unreachable: {exc}") from None


def _redacted(url: str) -> str:
    """A URL without its path and query, which often hold a webhook's secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
