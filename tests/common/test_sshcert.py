"""The one OpenSSH certificate parser: every type a user's key may have (the fleet signs RSA,
ECDSA and ed25519 user keys, and the client reads its certificate's expiry back), and ed25519
certificates with their CA's signature checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncssh
import pytest

from leeward.common import sshcert
from leeward.fleet.ca import CertificateAuthority

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("algorithm", "options"),
    [("ssh-ed25519", {}), ("ssh-rsa", {"key_size": 2048}), ("ecdsa-sha2-nistp384", {})],
)
def test_every_user_key_type_the_fleet_signs_is_read(
    algorithm: str, options: dict[str, int]
) -> None:
    ca = CertificateAuthority.generate()
    key = asyncssh.generate_private_key(algorithm, **options)
    line, after, before = ca.sign_user_key(key.export_public_key().decode(), "ada", NOW, 2)
    cert = sshcert.read(line)
    assert cert.algorithm == f"{algorithm}-cert-v01@openssh.com"
    assert (cert.cert_type, cert.principals, cert.key_id) == (sshcert.USER_CERT, ["ada"], "ada")
    assert cert.valid_before == int(before.timestamp()) == sshcert.valid_before(line)
    assert cert.valid_after == int(after.timestamp())
    assert cert.signing_key == sshcert.public_blob(ca.user_ca_public)


def test_an_ed25519_host_certificate_is_checked_and_a_forged_one_refused() -> None:
    ca = CertificateAuthority.generate()
    _, line = ca.issue_host_identity(["box.north.leeward.test"], NOW, timedelta(hours=1))
    cert = sshcert.parse(line)
    assert cert.cert_type == sshcert.HOST_CERT and cert.principals == ["box.north.leeward.test"]
    kind, blob = line.split()[:2]
    raw = bytearray(sshcert.base64.b64decode(blob))
    raw[-10] ^= 1  # inside the CA's signature
    with pytest.raises(sshcert.CertificateError, match="invalid certificate signature"):
        sshcert.parse(f"{kind} {sshcert.base64.b64encode(bytes(raw)).decode()}")


@pytest.mark.parametrize(
    "line",
    ["", "garbage", "ssh-ed25519 AAAA", "ssh-ed25519-cert-v01@openssh.com AAAA", "x !!notbase64"],
)
def test_anything_else_is_not_a_certificate(line: str) -> None:
    assert sshcert.valid_before(line) is None
    with pytest.raises(sshcert.CertificateError):
        sshcert.read(line)
