"""What `leeward config-ssh` writes (one pinned entry per environment, the CA line, the
Include), and the user certificate's validity read from its blob."""

from __future__ import annotations

import base64
import stat
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

from leeward.client.paths import Paths
from leeward.client.sshconfig import (
    add_include,
    certificate_needs_renewal,
    entries_for,
    has_include,
    include_line,
    render_known_hosts,
    render_ssh_config,
)
from leeward.common import sshcert
from leeward_protocol.fleet import Environment, SSHAuthorities

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def paths_in(root: Path) -> Paths:
    return Paths(
        config_dir=root / "config",
        data_dir=root / "data",
        state_dir=root / "state",
        ssh_dir=root / "home dir" / ".ssh" / "leeward",
    )


def environment(name: str, state: str = "running", **extra: object) -> Environment:
    wire: dict[str, object] = {
        "id": f"e-{name}",
        "name": name,
        "fqdn": f"{name}.us-east.leeward.test",
        "kind": "devserver",
        "flavor": "small",
        "hardware": {"cpus": 2, "memoryGib": 8},
        "region": "us-east",
        "address": "127.101.0.7",
        "sshPort": 2222,
        "state": state,
        "lifespan": "temporary",
        "createdAt": NOW.isoformat(),
        "updatedAt": NOW.isoformat(),
    }
    wire.update(extra)
    return Environment.model_validate(wire)


# -- the ssh files ---------------------------------------------------------------------------


def test_ssh_config_has_one_pinned_entry_per_running_environment(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    envs = [
        environment("zeta"),
        environment(
            "alpha",
            address="127.102.0.9",
            sshPort=2300,
            region="eu-west",
            fqdn="alpha.eu-west.leeward.test",
        ),
        environment("starting", state="provisioning", address=None, sshPort=None),
        environment("gone", state="deleted"),
    ]
    text = render_ssh_config(entries_for(envs), user="ada", paths=paths)
    blocks = [b for b in text.split("\nHost ")[1:]]
    assert [b.split()[0] for b in blocks] == ["alpha", "zeta"]
    assert blocks[0].startswith("alpha alpha.eu-west.leeward.test\n")
    for block, fqdn, address, port in [
        (blocks[0], "alpha.eu-west.leeward.test", "127.102.0.9", 2300),
        (blocks[1], "zeta.us-east.leeward.test", "127.101.0.7", 2222),
    ]:
        lines = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in block.splitlines()[1:]}
        assert lines["HostKeyAlias"] == fqdn
        assert lines["HostName"] == address
        assert lines["Port"] == str(port)
        assert lines["User"] == "ada"
        assert lines["StrictHostKeyChecking"] == "yes"
        assert lines["IdentitiesOnly"] == "yes"
        # absolute, and quoted because the home has a space in it
        assert lines["IdentityFile"] == f'"{paths.identity.absolute()}"'
        assert lines["CertificateFile"] == f'"{paths.certificate.absolute()}"'
        assert lines["UserKnownHostsFile"] == f'"{paths.known_hosts.absolute()}"'
    assert text.count("HostKeyAlias") == text.count("\nHost ") == 2
    lowered = " ".join(text.lower().split())
    assert "stricthostkeychecking no" not in lowered
    assert "/dev/null" not in text
    assert "~" not in text


def test_ssh_config_goes_through_the_relay_when_asked(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    envs = [
        environment("box", relayPort=2223),
        environment("moving", state="migrating", relayPort=2223, address="127.101.0.8"),
        environment("old", relayPort=None, address="127.101.0.9"),
    ]
    text = render_ssh_config(
        entries_for(envs), user="ada", paths=paths, proxy="/opt/lee ward/bin/leeward"
    )
    blocks = {b.split()[0]: b for b in text.split("\nHost ")[1:]}
    assert set(blocks) == {"box", "moving", "old"}, "a migrating environment takes connections"
    proxy = [line.strip() for line in blocks["box"].splitlines() if "ProxyCommand" in line]
    assert proxy == [
        f'ProxyCommand "/opt/lee ward/bin/leeward" proxy %n --known-hosts '
        f'"{paths.known_hosts.absolute()}"'
    ]
    assert "HostKeyAlias box.us-east.leeward.test" in blocks["box"], "still pinned"
    assert "ProxyCommand" not in blocks["old"], "an agent without a relay is reached directly"
    plain = render_ssh_config(entries_for(envs), user="ada", paths=paths)
    assert "ProxyCommand" not in plain


def test_ssh_config_without_environments_is_only_the_header(tmp_path: Path) -> None:
    text = render_ssh_config([], user="ada", paths=paths_in(tmp_path))
    assert "Host " not in text
    assert text.startswith("#")


def test_known_hosts_trusts_the_host_ca_for_the_zone_only() -> None:
    authorities = SSHAuthorities(
        zone="leeward.test", host_ca="ssh-ed25519 AAAAhost fleet-host-ca\n", user_ca="x"
    )
    assert render_known_hosts(authorities).splitlines()[-1] == (
        "@cert-authority *.leeward.test ssh-ed25519 AAAAhost fleet-host-ca"
    )


def test_include_goes_at_the_top_once_and_keeps_the_mode(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    user_config = tmp_path / "ssh_config"
    user_config.write_text("Host *\n    ServerAliveInterval 30\n")
    user_config.chmod(0o640)
    assert not has_include(user_config, paths)
    assert add_include(user_config, paths)
    assert not add_include(user_config, paths)
    lines = user_config.read_text().splitlines()
    first = next(line for line in lines if not line.startswith("#"))
    assert first == include_line(paths)
    assert lines[-2:] == ["Host *", "    ServerAliveInterval 30"]
    assert stat.S_IMODE(user_config.stat().st_mode) == 0o640


def test_include_creates_a_private_ssh_config(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    user_config = tmp_path / "new" / ".ssh" / "config"
    assert add_include(user_config, paths)
    assert stat.S_IMODE(user_config.stat().st_mode) == 0o600
    assert stat.S_IMODE(user_config.parent.stat().st_mode) == 0o700


# -- certificates ----------------------------------------------------------------------------


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def fake_certificate(valid_before: int, kind: str = "ssh-ed25519-cert-v01@openssh.com") -> str:
    blob = (
        _string(kind.encode())
        + _string(b"n" * 32)
        + _string(b"k" * 32)
        + struct.pack(">QI", 7, 1)
        + _string(b"ada")
        + _string(_string(b"ada"))
        + struct.pack(">QQ", 0, valid_before)
        + _string(b"")  # critical options
        + _string(b"")  # extensions
        + _string(b"")  # reserved
        + _string(_string(b"ssh-ed25519") + _string(b"c" * 32))  # the CA's key
        + _string(_string(b"ssh-ed25519") + _string(b"s" * 64))  # its signature
    )
    return f"{kind} {base64.b64encode(blob).decode()} ada@leeward"


def test_certificate_validity_is_read_from_the_blob() -> None:
    assert sshcert.valid_before(fake_certificate(1_800_000_000)) == 1_800_000_000
    assert sshcert.valid_before("ssh-ed25519 AAAA") is None
    assert sshcert.valid_before("garbage") is None
    assert sshcert.valid_before(fake_certificate(5, kind="ssh-unknown-cert")) is None


def test_a_real_asyncssh_certificate_parses() -> None:
    import asyncssh

    ca = asyncssh.generate_private_key("ssh-ed25519")
    user = asyncssh.generate_private_key("ssh-ed25519")
    cert = ca.generate_user_certificate(user, "ada", principals=["ada"], valid_before="+2h")
    line = cert.export_certificate().decode()
    valid_before = sshcert.valid_before(line)
    assert valid_before is not None
    assert abs(valid_before - (datetime.now(UTC) + timedelta(hours=2)).timestamp()) < 120


def test_renewal_under_an_hour_left(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    assert certificate_needs_renewal(paths)  # none yet
    paths.certificate.parent.mkdir(parents=True)
    now = 1_800_000_000
    paths.certificate.write_text(fake_certificate(now + 3 * 3600))
    assert not certificate_needs_renewal(paths, now=now)
    paths.certificate.write_text(fake_certificate(now + 59 * 60))
    assert certificate_needs_renewal(paths, now=now)
    paths.certificate.write_text(fake_certificate(sshcert.FOREVER))
    assert not certificate_needs_renewal(paths, now=now)
    paths.certificate.write_text("not a certificate")
    assert certificate_needs_renewal(paths, now=now)
