"""Who is at the other end of a relay link, and whether it may resume a session.

Every link starts with the same exchange (docs/relay-protocol.md): the proxy's nonce and
X25519 key; the agent's nonce, X25519 key, boot id, host certificate and a signature over the
transcript with its host key. The proxy checks the certificate against the fleet's host CA
and the environment's name before it sends anything else. A new session's secret comes from
the key agreement (it never crosses the wire); a resume proves knowledge of it with an HMAC
over the fresh transcript, so a recorded resume cannot be replayed and a stranger cannot
take a session over.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from leeward.common import sshcert
from leeward.relay.frames import Kind, ProtocolError, json_frame, json_of, read_frame

VERSION = 1
CONTEXT = b"leeward-relay-1\0"
HANDSHAKE_SECONDS = 10.0


class HandshakeRefused(Exception):
    """The other side (or its identity) was refused; `reason` is a short code."""

    def __init__(self, reason: str, message: str, boot: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.boot = boot
        """The agent's boot id, when it was told before the refusal."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(body: dict[str, object], key: str, size: int | None = None) -> bytes:
    value = body.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"handshake field {key!r} is missing")
    try:
        data = base64.b64decode(value, validate=True)
    except ValueError:
        raise ProtocolError(f"handshake field {key!r} is not base64") from None
    if size is not None and len(data) != size:
        raise ProtocolError(f"handshake field {key!r} has the wrong length")
    return data


def _text(body: dict[str, object], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"handshake field {key!r} is missing")
    return value


def _int(body: dict[str, object], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"handshake field {key!r} is not a count")
    return value


def transcript(hello: bytes, nonce: bytes, key: bytes, boot: str) -> bytes:
    """What the agent signs and what every proof covers: both nonces and keys, the boot id."""
    h = hashlib.sha256(CONTEXT)
    h.update(struct.pack(">I", len(hello)) + hello)
    h.update(nonce + key + boot.encode())
    return h.digest()


def session_secret(private: X25519PrivateKey, peer_key: bytes, transcript_hash: bytes) -> bytes:
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_key))
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=transcript_hash,
        info=b"leeward relay session secret",
    )
    return hkdf.derive(shared)


def proof(secret: bytes, label: bytes, transcript_hash: bytes, session: str, count: int) -> bytes:
    message = label + b"\0" + transcript_hash + session.encode() + struct.pack(">Q", count)
    return hmac.new(secret, message, hashlib.sha256).digest()


def _public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


async def _expect(reader: asyncio.StreamReader, *kinds: Kind) -> tuple[Kind, dict[str, object]]:
    kind, payload = await read_frame(reader)
    if kind not in kinds:
        raise ProtocolError(f"expected {' or '.join(k.name for k in kinds)}, got {kind.name}")
    return kind, json_of(payload)


# -- the proxy's side ------------------------------------------------------------------------


def host_authorities(known_hosts: Path, fqdn: str) -> list[bytes]:
    """The `@cert-authority` keys of `known_hosts` whose host pattern matches `fqdn`, as SSH
    public key blobs."""
    keys = []
    try:
        lines = known_hosts.read_text().splitlines()
    except OSError as exc:
        raise HandshakeRefused("no-trust", f"cannot read {known_hosts}: {exc.strerror}") from None
    for line in lines:
        words = line.split()
        if len(words) < 4 or words[0] != "@cert-authority":
            continue
        patterns = words[1].split(",")
        if any(fnmatch.fnmatch(fqdn.lower(), p.lower()) for p in patterns if p[:1] != "!"):
            with contextlib.suppress(ValueError):
                keys.append(sshcert.public_blob(" ".join(words[2:4])))
    if not keys:
        raise HandshakeRefused(
            "no-trust", f"{known_hosts} has no @cert-authority line for {fqdn}: run config-ssh"
        )
    return keys


@dataclass(frozen=True)
class _Checked:
    signing_key: bytes
    principals: list[str]
    host: bool
    valid_after: int
    valid_before: int
    signs: Callable[[bytes, bytes], bool]


def _read_certificate(certificate: str) -> _Checked:
    """The certificate's fields, its CA's signature checked; ed25519 without asyncssh."""
    if certificate.startswith(sshcert.ED25519_CERT.decode() + " "):
        cert = sshcert.parse(certificate)
        return _Checked(
            cert.signing_key,
            cert.principals,
            cert.cert_type == sshcert.HOST_CERT,
            cert.valid_after,
            cert.valid_before,
            lambda data, sig: sshcert.verify_ed25519(cert.key, data, sig),
        )
    import asyncssh
    from asyncssh.public_key import CERT_TYPE_HOST, SSHOpenSSHCertificate

    try:
        other = asyncssh.import_certificate(certificate)
        if not isinstance(other, SSHOpenSSHCertificate):
            raise ValueError("not an OpenSSH certificate")
        other.validate(CERT_TYPE_HOST, None)  # a host certificate, valid now
    except asyncssh.KeyImportError as exc:
        raise ValueError(str(exc)) from None
    return _Checked(
        other.signing_key.public_data,
        list(other.principals),
        True,
        0,
        sshcert.FOREVER,
        lambda data, sig: bool(other.key.verify(data, sig)),
    )


def check_host(
    certificate: str,
    signature: bytes,
    signed: bytes,
    fqdn: str,
    cas: list[bytes],
    now: float | None = None,
    *,
    where: str = "this address",
) -> None:
    """Refuse unless `certificate` is a valid host certificate for `fqdn` from one of `cas`
    and its key made `signature` over `signed`. `where` (the peer's address) goes into the
    sentence: the person reading it must know which host it was."""
    try:
        cert = _read_certificate(certificate)
    except ValueError as exc:
        raise HandshakeRefused(
            "rogue", f"the host certificate at {where} is not valid: {exc}"
        ) from None
    if cert.signing_key not in cas:
        raise HandshakeRefused("rogue", sshcert.unsigned_host(where, fqdn))
    if not cert.host:
        raise HandshakeRefused("rogue", f"the host at {where} presented a user certificate")
    if fqdn not in cert.principals:
        names = ", ".join(cert.principals) or "nobody"
        raise HandshakeRefused(
            "rogue",
            f"the host certificate at {where} is not for {fqdn} (it names {names}): a stale "
            "address, or an impostor",
        )
    now = time.time() if now is None else now
    if not cert.valid_after <= now < cert.valid_before:
        raise HandshakeRefused(
            "rogue", f"the host certificate at {where} for {fqdn} is not valid now"
        )
    if not cert.signs(signed, signature):
        raise HandshakeRefused(
            "rogue", f"the host at {where}: its signature does not match its certificate"
        )


@dataclass(frozen=True)
class Ticket:
    """What the proxy keeps to resume a session."""

    session: str
    secret: bytes
    boot: str


@dataclass(frozen=True)
class Welcomed:
    ticket: Ticket
    peer_received: int


async def verify_host(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    fqdn: str,
    authorities: list[bytes],
) -> tuple[X25519PrivateKey, bytes, str, bytes]:
    """Steps 1 to 3: HELLO, the agent's signed SERVER_HELLO, and its host certificate checked.
    Nothing is opened on the agent until NEW or RESUME, so a caller that only wants to know
    who answers at an address (address racing) can stop here. Returns our X25519 key, the
    agent's, its boot id and the transcript hash."""
    nonce = secrets.token_bytes(32)
    private = X25519PrivateKey.generate()
    hello = json_frame(
        Kind.HELLO,
        {"v": VERSION, "nonce": _b64(nonce), "key": _b64(_public(private)), "fqdn": fqdn},
    )
    writer.write(hello)
    _, server = await _expect(reader, Kind.SERVER_HELLO, Kind.REFUSED)
    if "reason" in server:
        raise HandshakeRefused(_text(server, "reason"), _text(server, "message"))
    server_key = _unb64(server, "key", 32)
    boot = _text(server, "boot")
    signed = transcript(hello[5:], _unb64(server, "nonce", 32), server_key, boot)
    peer = writer.get_extra_info("peername")
    check_host(
        _text(server, "certificate"),
        _unb64(server, "signature"),
        signed,
        fqdn,
        authorities,
        where=peer[0] if peer else "this address",
    )
    return private, server_key, boot, signed


async def client_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    fqdn: str,
    authorities: list[bytes],
    resume: Ticket | None,
    received: int = 0,
) -> Welcomed:
    """Verify the agent, then open a new session or resume `resume` (we hold `received`
    bytes of its stream). HandshakeRefused says why not."""
    private, server_key, boot, signed = await verify_host(
        reader, writer, fqdn=fqdn, authorities=authorities
    )
    fresh = session_secret(private, server_key, signed)
    if resume is None:
        writer.write(json_frame(Kind.NEW, {}))
        secret = fresh
    else:
        secret = resume.secret
        writer.write(
            json_frame(
                Kind.RESUME,
                {
                    "session": resume.session,
                    "received": received,
                    "proof": _b64(proof(secret, b"resume", signed, resume.session, received)),
                },
            )
        )
    kind, answer = await _expect(reader, Kind.WELCOME, Kind.REFUSED)
    if kind is Kind.REFUSED:
        raise HandshakeRefused(_text(answer, "reason"), _text(answer, "message"), boot)
    session, peer_received = _text(answer, "session"), _int(answer, "received")
    if resume is not None and session != resume.session:
        raise ProtocolError("the agent welcomed another session")
    expected = proof(secret, b"welcome", signed, session, peer_received)
    if not hmac.compare_digest(expected, _unb64(answer, "proof")):
        raise HandshakeRefused("bad-proof", "the agent could not prove it holds the session")
    return Welcomed(Ticket(session, secret, boot), peer_received)


# -- the agent's side ------------------------------------------------------------------------


@dataclass(frozen=True)
class HostIdentity:
    key: Any  # asyncssh.SSHKey (private)
    certificate: str


@dataclass(frozen=True)
class Request:
    """A verified request from a proxy: a new session or a resume with its proof checked."""

    transcript: bytes
    secret: bytes
    session: str | None
    received: int


SecretOf = Any  # Callable[[str], bytes | None]


async def agent_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    identity: HostIdentity,
    fqdn: str,
    boot: str,
    secret_of: SecretOf,
) -> Request:
    kind, hello = await read_frame(reader)  # the transcript covers the exact bytes received
    if kind is not Kind.HELLO:
        raise ProtocolError(f"expected HELLO, got {kind.name}")
    hello_body = json_of(hello)
    if hello_body.get("v") != VERSION:
        refuse(writer, "version", f"relay protocol {hello_body.get('v')!r} is not spoken here")
        raise HandshakeRefused("version", "unknown protocol version")
    client_key = _unb64(hello_body, "key", 32)
    _unb64(hello_body, "nonce", 32)
    if _text(hello_body, "fqdn") != fqdn:
        refuse(writer, "wrong-host", f"this is {fqdn}, not {hello_body.get('fqdn')}")
        raise HandshakeRefused("wrong-host", "the proxy wanted another environment")
    nonce = secrets.token_bytes(32)
    private = X25519PrivateKey.generate()
    key = _public(private)
    signed = transcript(hello, nonce, key, boot)
    writer.write(
        json_frame(
            Kind.SERVER_HELLO,
            {
                "v": VERSION,
                "nonce": _b64(nonce),
                "key": _b64(key),
                "boot": boot,
                "certificate": identity.certificate.strip(),
                "signature": _b64(identity.key.sign(signed, identity.key.sig_algorithms[0])),
            },
        )
    )
    kind, body = await _expect(reader, Kind.NEW, Kind.RESUME)
    if kind is Kind.NEW:
        return Request(signed, session_secret(private, client_key, signed), None, 0)
    session, received = _text(body, "session"), _int(body, "received")
    secret = secret_of(session)
    if secret is None:
        refuse(writer, "unknown-session", f"no session {session} on this agent (boot {boot})")
        raise HandshakeRefused("unknown-session", f"unknown session {session}")
    if not hmac.compare_digest(
        proof(secret, b"resume", signed, session, received), _unb64(body, "proof")
    ):
        refuse(writer, "bad-proof", "the resume proof is wrong")
        raise HandshakeRefused("bad-proof", f"wrong proof for session {session}")
    return Request(signed, secret, session, received)


def welcome(writer: asyncio.StreamWriter, request: Request, session: str, received: int) -> None:
    writer.write(
        json_frame(
            Kind.WELCOME,
            {
                "session": session,
                "received": received,
                "proof": _b64(
                    proof(request.secret, b"welcome", request.transcript, session, received)
                ),
            },
        )
    )


def refuse(writer: asyncio.StreamWriter, reason: str, message: str) -> None:
    writer.write(json_frame(Kind.REFUSED, {"reason": reason, "message": message}))
