"""OpenSSH certificates, read with the standard library and `cryptography` alone: the one parser
of certificate lines in Leeward.

`read` takes any certificate type OpenSSH issues apart (the client side reads its user
certificate's expiry with it); `parse` also checks the CA's signature on an ed25519 one (the
fleet's CAs and host keys are ed25519), which the relay's handshake needs. `leeward proxy`
starts once per SSH connection, so it does not pay asyncssh's import (about 100 ms) for this;
other key types go to asyncssh where a signature must be checked.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ED25519 = b"ssh-ed25519"
ED25519_CERT = b"ssh-ed25519-cert-v01@openssh.com"
USER_CERT = 1
HOST_CERT = 2
FOREVER = 2**64 - 1
"""`valid before` of a certificate that never expires."""

KEY_FIELDS = {
    "ssh-ed25519-cert-v01@openssh.com": 1,
    "ssh-rsa-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp384-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": 2,
    "ssh-dss-cert-v01@openssh.com": 4,
}
"""How many public key fields each certificate type carries before its serial (OpenSSH's
PROTOCOL.certkeys)."""


class CertificateError(ValueError):
    pass


def unsigned_host(where: str, fqdn: str) -> str:
    """The sentence for a host whose key the fleet's host CA did not sign for `fqdn`, one for
    every client that checks (the relay's handshake, `leeward locate`): who answered, and the
    two ways it comes about."""
    return (
        f"the host at {where} is not signed by the fleet's host CA for {fqdn}: an impostor, "
        "or a stale address"
    )


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def string(self) -> bytes:
        if self.at + 4 > len(self.data):
            raise CertificateError("truncated certificate")
        (n,) = struct.unpack_from(">I", self.data, self.at)
        value = self.data[self.at + 4 : self.at + 4 + n]
        if len(value) != n:
            raise CertificateError("truncated certificate")
        self.at += 4 + n
        return value

    def uint(self, size: int) -> int:
        if self.at + size > len(self.data):
            raise CertificateError("truncated certificate")
        value = int.from_bytes(self.data[self.at : self.at + size], "big")
        self.at += size
        return value


@dataclass(frozen=True)
class Certificate:
    algorithm: str
    key_fields: tuple[bytes, ...]
    """The certified public key's fields (ed25519: the raw 32-byte key)."""
    cert_type: int
    """USER_CERT or HOST_CERT."""
    key_id: str
    principals: list[str]
    valid_after: int
    valid_before: int
    """Unix seconds; FOREVER for no limit."""
    critical_options: bytes
    signing_key: bytes
    """The CA's public key blob (SSH wire format)."""
    signed: bytes
    """What the CA signed: the blob up to its signature."""
    signature: bytes

    @property
    def key(self) -> bytes:
        return self.key_fields[0]


def public_blob(line: str) -> bytes:
    """The SSH wire blob of an `ssh-ed25519 AAAA...` public key line."""
    return base64.b64decode(line.split()[1], validate=True)


def read(line: str) -> Certificate:
    """Take a certificate line (`TYPE BASE64 [COMMENT]`) apart, signature unchecked."""
    try:
        blob = base64.b64decode(line.split()[1], validate=True)
    except (IndexError, ValueError):
        raise CertificateError("not an OpenSSH certificate line") from None
    r = _Reader(blob)
    try:
        algorithm = r.string().decode()
    except UnicodeDecodeError:
        raise CertificateError("not an OpenSSH certificate") from None
    fields = KEY_FIELDS.get(algorithm)
    if fields is None:
        raise CertificateError(f"not a certificate type this parser knows: {algorithm[:60]!r}")
    r.string()  # nonce
    key_fields = tuple(r.string() for _ in range(fields))
    r.uint(8)  # serial
    cert_type = r.uint(4)
    try:
        key_id = r.string().decode()
        names = _Reader(r.string())
        principals = []
        while names.at < len(names.data):
            principals.append(names.string().decode())
    except UnicodeDecodeError:
        raise CertificateError("a certificate with names that are not UTF-8") from None
    valid_after, valid_before = r.uint(8), r.uint(8)
    critical = r.string()
    r.string()  # extensions
    r.string()  # reserved
    signing_key = r.string()
    signed = blob[: r.at]
    signature = r.string()
    if r.at != len(blob):
        raise CertificateError("trailing bytes after the certificate")
    return Certificate(
        algorithm=algorithm,
        key_fields=key_fields,
        cert_type=cert_type,
        key_id=key_id,
        principals=principals,
        valid_after=valid_after,
        valid_before=valid_before,
        critical_options=critical,
        signing_key=signing_key,
        signed=signed,
        signature=signature,
    )


def valid_before(line: str) -> int | None:
    """The `valid before` of a certificate line, in Unix seconds (FOREVER for no limit); None
    when the line is not a certificate this parser knows."""
    try:
        return read(line).valid_before
    except CertificateError:
        return None


def _ed25519_of(blob: bytes) -> bytes:
    r = _Reader(blob)
    if r.string() != ED25519:
        raise CertificateError("not an ed25519 key")
    key = r.string()
    if len(key) != 32:
        raise CertificateError("bad ed25519 key")
    return key


def verify_ed25519(key: bytes, data: bytes, signature: bytes) -> bool:
    """Check an SSH-encoded ed25519 signature (string algorithm, string signature)."""
    try:
        r = _Reader(signature)
        if r.string() != ED25519:
            return False
        Ed25519PublicKey.from_public_bytes(key).verify(r.string(), data)
    except (CertificateError, InvalidSignature, ValueError):
        return False
    return True


def parse(line: str) -> Certificate:
    """An ed25519 host or user certificate line, its CA's (ed25519) signature checked."""
    cert = read(line)
    if cert.algorithm != ED25519_CERT.decode():
        raise CertificateError("not an ed25519 certificate")
    if len(cert.key) != 32:
        raise CertificateError("bad ed25519 key in the certificate")
    if cert.critical_options and cert.cert_type == HOST_CERT:
        raise CertificateError("a host certificate with critical options")
    if not verify_ed25519(_ed25519_of(cert.signing_key), cert.signed, cert.signature):
        raise CertificateError("invalid certificate signature")
    return cert
