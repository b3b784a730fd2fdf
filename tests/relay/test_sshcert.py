"""The proxy's host certificate check, without asyncssh for ed25519 (the fleet's keys)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import asyncssh
import pytest

from leeward.common import sshcert
from leeward.fleet.ca import CertificateAuthority
from leeward.relay.handshake import HandshakeRefused, check_host

FQDN = "box.north.leeward.test"


def host(ca: CertificateAuthority, now: datetime) -> tuple[asyncssh.SSHKey, str]:
    key, cert = ca.issue_host_identity([FQDN, "e-1"], now, timedelta(hours=1))
    return asyncssh.import_private_key(key), cert


def signed_by(key: asyncssh.SSHKey, data: bytes) -> bytes:
    return bytes(key.sign(data, key.sig_algorithms[0]))


def test_a_host_certificate_from_the_fleet_ca_for_the_name_passes_and_nothing_else(
    ca: CertificateAuthority,
) -> None:
    now = datetime.now(UTC)
    key, cert = host(ca, now)
    cas = [sshcert.public_blob(ca.host_ca_public)]
    check_host(cert, signed_by(key, b"t"), b"t", FQDN, cas)
    parsed = sshcert.parse(cert)
    assert parsed.principals == [FQDN, "e-1"] and parsed.cert_type == sshcert.HOST_CERT

    with pytest.raises(HandshakeRefused, match="does not match"):
        check_host(cert, signed_by(key, b"other"), b"t", FQDN, cas)
    with pytest.raises(HandshakeRefused, match=r"not for other\.north"):
        check_host(cert, signed_by(key, b"t"), b"t", "other.north.leeward.test", cas)
    with pytest.raises(HandshakeRefused, match="not valid now"):
        check_host(cert, signed_by(key, b"t"), b"t", FQDN, cas, now=now.timestamp() + 7200)
    with pytest.raises(HandshakeRefused, match="not signed by the fleet's host CA"):
        check_host(cert, signed_by(key, b"t"), b"t", FQDN, [b"another CA"])

    # One flipped byte in the certificate: the CA's signature no longer holds.
    kind, blob = cert.split()[:2]
    raw = bytearray(sshcert.base64.b64decode(blob))
    raw[-80] ^= 1
    tampered = f"{kind} {sshcert.base64.b64encode(bytes(raw)).decode()}"
    with pytest.raises(HandshakeRefused, match="not valid"):
        check_host(tampered, signed_by(key, b"t"), b"t", FQDN, cas)


def test_a_user_certificate_is_not_a_host(ca: CertificateAuthority) -> None:
    user = asyncssh.generate_private_key("ssh-ed25519")
    line, _, _ = ca.sign_user_key(user.export_public_key().decode(), FQDN, datetime.now(UTC), 1)
    cas = [sshcert.public_blob(ca.user_ca_public)]
    with pytest.raises(HandshakeRefused, match="user certificate"):
        check_host(line, signed_by(user, b"t"), b"t", FQDN, cas)


def test_other_key_types_are_checked_by_asyncssh() -> None:
    ca_key = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
    host_key = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
    cert = ca_key.generate_host_certificate(host_key, "box", principals=[FQDN])
    line = cert.export_certificate().decode()
    cas = [ca_key.public_data]
    check_host(line, signed_by(host_key, b"t"), b"t", FQDN, cas)
    with pytest.raises(HandshakeRefused, match="does not match"):
        check_host(line, signed_by(host_key, b"x"), b"t", FQDN, cas)


def test_the_proxy_starts_without_asyncssh() -> None:
    code = (
        "import sys, leeward.relay.proxy, leeward.relay.candidates, "
        "leeward.client.credentials, leeward.client.paths; "
        "assert 'asyncssh' not in sys.modules and 'aiohttp' not in sys.modules "
        "and 'pydantic' not in sys.modules and 'typer' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
