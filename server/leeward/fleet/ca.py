"""The fleet's SSH certificate authorities: one signs environments' host keys, one users' keys.

Clients trust environments through one `@cert-authority *.ZONE` line in known_hosts; agents
trust users through the user CA's public key. Time always comes from the caller, so validity
windows are tested with a fixed `now`.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import asyncssh
from cryptography.hazmat.primitives.asymmetric import rsa

MAX_USER_CERTIFICATE_HOURS = 16
CLOCK_SKEW = timedelta(minutes=1)
"""Certificates start this much before `now`, so a client whose clock runs a little behind the
server's does not see a certificate that is not yet valid."""

_KEY_ALGORITHM = "ssh-ed25519"
_MIN_RSA_BITS = 2048
_REFUSED_ALGORITHMS = {b"ssh-dss": "DSA keys are weak and OpenSSH no longer accepts them"}


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return now.astimezone(UTC)


def _private_text(key: asyncssh.SSHKey) -> str:
    return bytes(key.export_private_key("openssh")).decode()


def _public_line(key: asyncssh.SSHKey) -> str:
    return bytes(key.export_public_key("openssh")).decode().strip()


class CertificateAuthority:
    """The host CA and the user CA of one fleet (both ed25519)."""

    def __init__(self, host_ca: asyncssh.SSHKey, user_ca: asyncssh.SSHKey) -> None:
        if host_ca.public_data == user_ca.public_data:
            # One key for both roles would let a user certificate pass as a host's, or back.
            raise ValueError("the host CA and the user CA must be different keys")
        self._host_ca = host_ca
        self._user_ca = user_ca

    @classmethod
    def generate(cls) -> CertificateAuthority:
        return cls(
            asyncssh.generate_private_key(_KEY_ALGORITHM, comment="leeward host CA"),
            asyncssh.generate_private_key(_KEY_ALGORITHM, comment="leeward user CA"),
        )

    @classmethod
    def from_private_keys(cls, host_ca_pem: str, user_ca_pem: str) -> CertificateAuthority:
        keys = []
        for what, pem in (("host CA", host_ca_pem), ("user CA", user_ca_pem)):
            try:
                keys.append(asyncssh.import_private_key(pem))
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise ValueError(f"{what}: not an OpenSSH private key: {exc}") from None
        return cls(keys[0], keys[1])

    @property
    def host_ca_private(self) -> str:
        return _private_text(self._host_ca)

    @property
    def user_ca_private(self) -> str:
        return _private_text(self._user_ca)

    @property
    def host_ca_public(self) -> str:
        return _public_line(self._host_ca)

    @property
    def user_ca_public(self) -> str:
        return _public_line(self._user_ca)

    def known_hosts_line(self, zone: str) -> str:
        """The known_hosts line that makes ssh trust every environment of the zone."""
        zone = zone.strip(".").lower()
        if not zone:
            raise ValueError("zone must be a DNS name such as leeward.test")
        return f"@cert-authority *.{zone} {self.host_ca_public}"

    def issue_host_identity(
        self, principals: list[str], now: datetime, valid_for: timedelta
    ) -> tuple[str, str]:
        """A fresh ed25519 host key and its certificate: (private key text, certificate line)."""
        names = [p.strip() for p in principals if p.strip()]
        if not names:
            raise ValueError("a host certificate needs at least one principal")
        if any("," in p or " " in p for p in names):
            raise ValueError(f"host principals must not contain ',' or spaces: {names}")
        if valid_for <= timedelta(0):
            raise ValueError("valid_for must be positive")
        start = _aware(now) - CLOCK_SKEW
        end = _aware(now) + valid_for
        host_key = asyncssh.generate_private_key(_KEY_ALGORITHM, comment=names[0])
        cert = self._host_ca.generate_host_certificate(
            host_key,
            key_id=f"host:{names[0]}",
            serial=secrets.randbits(64),
            principals=names,
            valid_after=int(start.timestamp()),
            valid_before=int(end.timestamp()),
            comment=names[0],
        )
        return _private_text(host_key), bytes(cert.export_certificate("openssh")).decode().strip()

    def sign_user_key(
        self, public_key: str, principal: str, now: datetime, hours: int
    ) -> tuple[str, datetime, datetime]:
        """Certify a user's public key: (certificate line, valid_after, valid_before)."""
        if not 1 <= hours <= MAX_USER_CERTIFICATE_HOURS:
            raise ValueError(
                f"hours: a user certificate lasts 1 to {MAX_USER_CERTIFICATE_HOURS} hours, "
                f"not {hours}"
            )
        principal = principal.strip()
        if not principal or any(c in principal for c in ", \t\n"):
            raise ValueError(f"principal: {principal!r} is not a user name")
        key = _user_key(public_key)
        start = _aware(now) - CLOCK_SKEW
        end = _aware(now) + timedelta(hours=hours)
        cert = self._user_ca.generate_user_certificate(
            key,
            key_id=principal,
            serial=secrets.randbits(64),
            principals=[principal],
            valid_after=int(start.timestamp()),
            valid_before=int(end.timestamp()),
            # Remote-SSH needs port forwarding and a PTY; agent and X11 forwarding stay off.
            permit_x11_forwarding=False,
            permit_agent_forwarding=False,
            permit_port_forwarding=True,
            permit_pty=True,
            permit_user_rc=True,
            comment=principal,
        )
        line = bytes(cert.export_certificate("openssh")).decode().strip()
        # OpenSSH timestamps are whole seconds: report what the certificate really says.
        after = datetime.fromtimestamp(int(start.timestamp()), UTC)
        before = datetime.fromtimestamp(int(end.timestamp()), UTC)
        return line, after, before


def _user_key(public_key: str) -> asyncssh.SSHKey:
    text = public_key.strip()
    if not text or "\n" in text:
        raise ValueError("public_key: expected one OpenSSH public key line")
    algorithm = text.split(None, 1)[0]
    if "-cert-" in algorithm:
        raise ValueError("public_key: this is a certificate; send the public key itself (.pub)")
    try:
        key = asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ValueError(f"public_key: not a valid OpenSSH public key ({exc})") from None
    if isinstance(key, asyncssh.SSHCertificate):  # pragma: no cover - refused above
        raise ValueError("public_key: this is a certificate; send the public key itself (.pub)")
    refused = _REFUSED_ALGORITHMS.get(key.algorithm)
    if refused:
        raise ValueError(f"public_key: {refused}; use an ed25519 key (ssh-keygen -t ed25519)")
    pyca_key = getattr(key, "pyca_key", None)
    if isinstance(pyca_key, rsa.RSAPublicKey):
        bits = pyca_key.key_size
        if bits < _MIN_RSA_BITS:
            raise ValueError(
                f"public_key: a {bits}-bit RSA key is too weak (at least {_MIN_RSA_BITS} bits); "
                "use an ed25519 key (ssh-keygen -t ed25519)"
            )
    return key
