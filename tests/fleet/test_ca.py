"""The fleet's SSH CA, checked with OpenSSH's own reader (`ssh-keygen -L`)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from leeward.fleet.ca import CertificateAuthority

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


def keygen_list(tmp_path: Path, cert: str) -> str:
    path = tmp_path / "x-cert.pub"
    path.write_text(cert + "\n")
    return subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)], check=True, capture_output=True, text=True
    ).stdout


def user_public_key(algorithm: str = "ssh-ed25519", **kwargs: int) -> str:
    key = asyncssh.generate_private_key(algorithm, **kwargs)
    return bytes(key.export_public_key()).decode().strip()


def test_round_trip_through_private_keys(ca: CertificateAuthority) -> None:
    again = CertificateAuthority.from_private_keys(ca.host_ca_private, ca.user_ca_private)
    assert again.host_ca_public == ca.host_ca_public
    assert again.user_ca_public == ca.user_ca_public
    assert ca.host_ca_public != ca.user_ca_public
    assert ca.host_ca_public.startswith("ssh-ed25519 ")
    assert "\n" not in ca.user_ca_public
    assert ca.host_ca_private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


def test_from_private_keys_refuses_garbage_and_one_key_for_both(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="host CA: not an OpenSSH private key"):
        CertificateAuthority.from_private_keys("nonsense", ca.user_ca_private)
    with pytest.raises(ValueError, match="different keys"):
        CertificateAuthority.from_private_keys(ca.host_ca_private, ca.host_ca_private)


def test_known_hosts_line(ca: CertificateAuthority) -> None:
    assert (
        ca.known_hosts_line("Leeward.Test.")
        == f"@cert-authority *.leeward.test {ca.host_ca_public}"
    )


def test_host_identity_is_read_by_openssh(ca: CertificateAuthority, tmp_path: Path) -> None:
    principals = ["box.us-east.leeward.test", "e-abc123", "box.leeward.test"]
    private, cert = ca.issue_host_identity(principals, NOW, timedelta(days=30))
    listing = keygen_list(tmp_path, cert)
    assert "Type: ssh-ed25519-cert-v01@openssh.com host certificate" in listing
    for principal in principals:
        assert f"\n                {principal}\n" in listing
    assert "Valid: from 2026-03-01T11:59:00 to 2026-03-31T12:00:00" in listing
    # The certificate is for the key that comes with it.
    key = asyncssh.import_private_key(private)
    assert asyncssh.import_certificate(cert).key.public_data == key.public_data
    signer = asyncssh.import_public_key(ca.host_ca_public)
    assert asyncssh.import_certificate(cert).signing_key.public_data == signer.public_data


def test_each_host_identity_is_fresh(ca: CertificateAuthority) -> None:
    a, _ = ca.issue_host_identity(["a.r.z"], NOW, timedelta(days=1))
    b, _ = ca.issue_host_identity(["a.r.z"], NOW, timedelta(days=1))
    assert a != b


def test_host_identity_refuses_no_principals(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="at least one principal"):
        ca.issue_host_identity([" "], NOW, timedelta(days=1))
    with pytest.raises(ValueError, match="positive"):
        ca.issue_host_identity(["a.r.z"], NOW, timedelta(0))


def test_user_certificate_is_read_by_openssh(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert, after, before = ca.sign_user_key(user_public_key(), "alice", NOW, 16)
    assert after == NOW - timedelta(minutes=1)
    assert before == NOW + timedelta(hours=16)
    listing = keygen_list(tmp_path, cert)
    assert "Type: ssh-ed25519-cert-v01@openssh.com user certificate" in listing
    assert 'Key ID: "alice"' in listing
    assert "Principals: \n                alice\n" in listing
    assert "Valid: from 2026-03-01T11:59:00 to 2026-03-02T04:00:00" in listing
    assert "permit-port-forwarding" in listing
    assert "permit-pty" in listing
    assert "permit-agent-forwarding" not in listing
    signer = asyncssh.import_public_key(ca.user_ca_public)
    assert asyncssh.import_certificate(cert).signing_key.public_data == signer.public_data


@pytest.mark.parametrize("hours", [0, -1, 17, 48])
def test_user_certificate_hours_are_bounded(ca: CertificateAuthority, hours: int) -> None:
    with pytest.raises(ValueError, match="1 to 16 hours"):
        ca.sign_user_key(user_public_key(), "alice", NOW, hours)


@pytest.mark.parametrize(
    ("algorithm", "options", "kind"),
    [
        ("ssh-rsa", {"key_size": 2048}, "ssh-rsa-cert-v01@openssh.com"),
        ("ecdsa-sha2-nistp256", {}, "ecdsa-sha2-nistp256-cert-v01@openssh.com"),
    ],
)
def test_user_certificate_accepts_strong_rsa_and_ecdsa(
    ca: CertificateAuthority, tmp_path: Path, algorithm: str, options: dict[str, int], kind: str
) -> None:
    public = user_public_key(algorithm, **options)
    cert, _, before = ca.sign_user_key(public, "alice", NOW, 1)
    assert before == NOW + timedelta(hours=1)
    listing = keygen_list(tmp_path, cert)
    assert f"Type: {kind} user certificate" in listing
    assert "Principals: \n                alice\n" in listing
    assert "Valid: from 2026-03-01T11:59:00 to 2026-03-01T13:00:00" in listing
    # For the key that was sent, signed by the user CA.
    certified = asyncssh.import_certificate(cert)
    assert certified.key.public_data == asyncssh.import_public_key(public).public_data
    signer = asyncssh.import_public_key(ca.user_ca_public)
    assert certified.signing_key.public_data == signer.public_data


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "one OpenSSH public key line"),
        ("ssh-ed25519 AAAAnotbase64!!", "not a valid OpenSSH public key"),
        ("hello world", "not a valid OpenSSH public key"),
    ],
)
def test_user_certificate_refuses_malformed_keys(
    ca: CertificateAuthority, key: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ca.sign_user_key(key, "alice", NOW, 1)


def test_user_certificate_refuses_weak_rsa(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="1024-bit RSA key is too weak"):
        ca.sign_user_key(user_public_key("ssh-rsa", key_size=1024), "alice", NOW, 1)


def test_user_certificate_refuses_dsa(ca: CertificateAuthority) -> None:
    # asyncssh can no longer generate DSA keys everywhere: a fixed public key will do.
    dsa = (
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4EddRIpUt9KnC7s5Of2EbdSPO9EAMMeP4C2USZpRV1AIlH7WT2NWPq/"
        "xfW6MPbLm1Vs14E7gB00b/JmYLdrmVClpJ+f6AR7ECLCT7up1/63xhv4O1fnxqimFQ8E+4P208UewwI1VBNaFpE"
        "y9nXzrith1yrv8iIDGZ3RSAHHAAAAFQCXYFCPFSMLzLKSuYKi64QL8Fgc9QAAAIEA9+GghdabPd7LvKtcNrhXuX"
        "mUr7v6OuqC+VdMCz0HgmdRWVeOutRZT+ZxBxCBgLRJFnEj6EwoFhO3zwkyjMim4TwWeotUfI0o4KOuHiuzpnWRb"
        "qN/C/ohNWLx+2J6ASQ7zKTxvqhRkImog9/hWuWfBpKLZl6Ae1UlZAFMO/7PSSoAAACBAPWsjUVXHBmP+MwLFvn"
        "XH7tPgh1xu2ikK0IsKLlUAFgRHwxd3E+H3/XAZ7TE2NJ/tD7iG+C5/hSwsuLlY2kNGBcXVEgZlY2KIfLSAg35zO"
        "YpENL+5sG0hwBu4Shv0vXqDFs0q7ds0M0Cq2J+HPCKPbvv6ZXp5+lHLHnXqgiMXX9+"
    )
    try:
        asyncssh.import_public_key(dsa)
    except (asyncssh.KeyImportError, ValueError):
        pytest.skip("this asyncssh cannot read DSA keys at all")
    with pytest.raises(ValueError, match="DSA keys are weak"):
        ca.sign_user_key(dsa, "alice", NOW, 1)


def test_user_certificate_refuses_a_certificate(ca: CertificateAuthority) -> None:
    cert, _, _ = ca.sign_user_key(user_public_key(), "alice", NOW, 1)
    with pytest.raises(ValueError, match="this is a certificate"):
        ca.sign_user_key(cert, "alice", NOW, 1)


@pytest.mark.parametrize("principal", ["", "a,b", "a b"])
def test_user_certificate_refuses_odd_principals(ca: CertificateAuthority, principal: str) -> None:
    with pytest.raises(ValueError, match="principal"):
        ca.sign_user_key(user_public_key(), principal, NOW, 1)


def test_naive_now_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ca.sign_user_key(user_public_key(), "alice", datetime(2026, 1, 1), 1)
