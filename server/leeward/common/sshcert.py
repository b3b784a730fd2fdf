"""OpenSSH ed25519 host certificates checked with `cryptography` alone: the fleet's CAs and
host keys are ed25519, and `leeward proxy` starts once per SSH connection, so it does not pay
asyncssh's import (about 100 ms) for the one check it needs. Other key types go to asyncssh."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ED25519 = b"ssh-ed25519"
ED25519_CERT = b"ssh-ed25519-cert-v01@openssh.com"
HOST_CERT = 2
FOREVER = 2**64 - 1


class CertificateError(ValueError):
    pass


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
class HostCertificate:
    key: bytes
    """The host's raw ed25519 public key."""
    cert_type: int
    principals: list[str]
    valid_after: int
    valid_before: int
    signing_key: bytes
    """The CA's public key blob (SSH wire format)."""


def public_blob(line: str) -> bytes:
    """The SSH wire blob of an `ssh-ed25519 AAAA...` public key line."""
    return base64.b64decode(line.split()[1], validate=True)


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


def parse(line: str) -> HostCertificate:
    """Parse an ed25519 certificate line and check the CA's signature on it."""
    try:
        blob = base64.b64decode(line.split()[1], validate=True)
    except (IndexError, ValueError):
        raise CertificateError("not an OpenSSH certificate line") from None
    r = _Reader(blob)
    if r.string() != ED25519_CERT:
        raise CertificateError("not an ed25519 certificate")
    r.string()  # nonce
    key = r.string()
    if len(key) != 32:
        raise CertificateError("bad ed25519 key in the certificate")
    r.uint(8)  # serial
    cert_type = r.uint(4)
    r.string()  # key id
    names = _Reader(r.string())
    principals = []
    while names.at < len(names.data):
        principals.append(names.string().decode())
    valid_after, valid_before = r.uint(8), r.uint(8)
    critical = r.string()
    if critical:
        raise CertificateError("a host certificate with critical options")
    r.string()  # extensions
    r.string()  # reserved
    signing_key = r.string()
    signed = blob[: r.at]
    signature = r.string()
    if r.at != len(blob):
        raise CertificateError("trailing bytes after the certificate")
    if not verify_ed25519(_ed25519_of(signing_key), signed, signature):
        raise CertificateError("invalid certificate signature")
    return HostCertificate(key, cert_type, principals, valid_after, valid_before, signing_key)
