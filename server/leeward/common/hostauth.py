"""How a host agent knows a command comes from its fleet: every request the fleet sends a host
is signed with the fleet's command key (Ed25519), whose public half the host was given when it
joined (with its host token, out of band, as `kubeadm join` pins a CA's hash). The signature
covers the method, the path and query, the host it is meant for, the time, a nonce and the
body's digest; the host refuses a signature that is not its fleet's, is for another host, is
older than `WINDOW` seconds, or is a nonce it has seen.

The other way, a host presents its host token (a bearer secret the fleet keeps hashed).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SCHEME = "Leeward-Fleet"
DATE = "Leeward-Date"
NONCE = "Leeward-Nonce"
HOST = "Leeward-Host"
WINDOW = 60.0
"""How old (or how far ahead) a signed command may be, in seconds: clocks must agree to this."""
KEY_PREFIX = "ed25519:"


class HostAuthError(Exception):
    """A command the host refuses; the message says why (it goes back in the 401)."""


def _canonical(method: str, target: str, host: str, date: str, nonce: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((SCHEME, method.upper(), target, host, date, nonce, digest)).encode()


def new_command_key() -> str:
    """A new private command key, PEM text (the fleet stores it beside its CAs)."""
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_text(private_pem: str) -> str:
    """The public half of a command key, as hosts are given it: `ed25519:BASE64`."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def load_public(text: str) -> Ed25519PublicKey:
    """A fleet's public command key from its `ed25519:BASE64` text; ValueError if it is not."""
    text = text.strip()
    if not text.startswith(KEY_PREFIX):
        raise ValueError(f"a fleet key looks like {KEY_PREFIX}BASE64, not {text[:20]!r}")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise ValueError(f"the fleet key is not an Ed25519 public key: {exc}") from None


class CommandSigner:
    """The fleet's side: the headers that make a request to `host` a command of this fleet."""

    def __init__(self, private_pem: str) -> None:
        key = serialization.load_pem_private_key(private_pem.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the fleet's command key must be an Ed25519 key")
        self._key = key
        self.public = public_text(private_pem)

    def headers(
        self, method: str, target: str, host: str, body: bytes, now: float
    ) -> dict[str, str]:
        """`target` is the path and query as sent; `now` the time (seconds since the epoch)."""
        date, nonce = f"{now:.3f}", secrets.token_hex(16)
        signature = self._key.sign(_canonical(method, target, host, date, nonce, body))
        return {
            DATE: date,
            NONCE: nonce,
            HOST: host,
            "Authorization": f"{SCHEME} {base64.b64encode(signature).decode()}",
        }


class CommandVerifier:
    """The host's side: is this request a command of our fleet, for us, now, and new?"""

    def __init__(
        self,
        fleet_key: str,
        host: str,
        now: Callable[[], float],
        *,
        not_before: float | None = None,
    ) -> None:
        """`not_before`: commands signed earlier are refused (the host's start: the nonces it
        saw before a restart are forgotten, so their commands must not be taken again)."""
        self._key = load_public(fleet_key)
        self.host = host
        self._now = now
        self._not_before = not_before
        self._seen: dict[str, float] = {}

    def verify(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> None:
        scheme, _, signature = headers.get("Authorization", "").partition(" ")
        if scheme != SCHEME or not signature:
            raise HostAuthError(f"only the fleet commands a host: `Authorization: {SCHEME} ...`")
        date, nonce, host = headers.get(DATE, ""), headers.get(NONCE, ""), headers.get(HOST, "")
        if host != self.host:
            raise HostAuthError(f"this command is for host {host!r}; this is {self.host!r}")
        try:
            sent = float(date)
        except ValueError:
            raise HostAuthError(f"{DATE} must be seconds since the epoch") from None
        now = self._now()
        if abs(now - sent) > WINDOW:
            raise HostAuthError(
                f"the command was signed {now - sent:+.0f} s from now (more than {WINDOW:g} s): "
                "a replay, or the fleet's and this host's clocks disagree (run NTP)"
            )
        if self._not_before is not None and sent < self._not_before:
            raise HostAuthError("the command was signed before this host agent started")
        if not 16 <= len(nonce) <= 64 or nonce in self._seen:
            raise HostAuthError("this command's nonce was seen before (a replay)")
        try:
            raw = base64.b64decode(signature, validate=True)
            self._key.verify(raw, _canonical(method, target, host, date, nonce, body))
        except (ValueError, InvalidSignature):
            raise HostAuthError("the signature is not this host's fleet's") from None
        self._seen[nonce] = sent
        if len(self._seen) > 4096:  # forget what the window refuses anyway
            self._seen = {n: t for n, t in self._seen.items() if now - t <= WINDOW}
