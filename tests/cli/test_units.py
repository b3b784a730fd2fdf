"""The CLI's pure parts: lifespans, ssh config rendering, certificates, credentials, errors."""

from __future__ import annotations

import base64
import os
import stat
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from leeward.cli.errors import CliError, format_error, one_sentence
from leeward.cli.lifespan import parse_lifespan
from leeward.cli.render import when
from leeward.credentials import (
    NOT_SIGNED_IN,
    Credentials,
    CredentialsError,
    load_credentials,
    store_credentials,
)
from leeward.paths import Paths
from leeward.sshconfig import (
    FOREVER,
    add_include,
    certificate_needs_renewal,
    certificate_valid_before,
    entries_for,
    has_include,
    include_line,
    render_known_hosts,
    render_ssh_config,
)
from leeward_protocol.fleet import Environment, Lifespan, SSHAuthorities

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


# -- lifespan --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8h", (Lifespan.TEMPORARY, 8)),
        ("3d", (Lifespan.TEMPORARY, 72)),
        ("12", (Lifespan.TEMPORARY, 12)),
        (" 2D ", (Lifespan.TEMPORARY, 48)),
        ("permanent", (Lifespan.PERMANENT, None)),
        ("Permanent", (Lifespan.PERMANENT, None)),
    ],
)
def test_lifespan_parses(text: str, expected: tuple[Lifespan, int | None]) -> None:
    assert parse_lifespan(text) == expected


@pytest.mark.parametrize("text", ["", "0h", "-3d", "8w", "forever", "1.5h", "h"])
def test_lifespan_refuses_with_a_hint(text: str) -> None:
    with pytest.raises(CliError, match=r"use hours \(8h\), days \(3d\) or `permanent`"):
        parse_lifespan(text)


# -- ssh config ------------------------------------------------------------------------------


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
        + _string(b"")
    )
    return f"{kind} {base64.b64encode(blob).decode()} ada@leeward"


def test_certificate_validity_is_read_from_the_blob() -> None:
    assert certificate_valid_before(fake_certificate(1_800_000_000)) == 1_800_000_000
    assert certificate_valid_before("ssh-ed25519 AAAA") is None
    assert certificate_valid_before("garbage") is None
    assert certificate_valid_before(fake_certificate(5, kind="ssh-unknown-cert")) is None


def test_a_real_asyncssh_certificate_parses() -> None:
    import asyncssh

    ca = asyncssh.generate_private_key("ssh-ed25519")
    user = asyncssh.generate_private_key("ssh-ed25519")
    cert = ca.generate_user_certificate(user, "ada", principals=["ada"], valid_before="+2h")
    line = cert.export_certificate().decode()
    valid_before = certificate_valid_before(line)
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
    paths.certificate.write_text(fake_certificate(FOREVER))
    assert not certificate_needs_renewal(paths, now=now)
    paths.certificate.write_text("not a certificate")
    assert certificate_needs_renewal(paths, now=now)


# -- credentials -----------------------------------------------------------------------------


def test_credentials_are_private(tmp_path: Path) -> None:
    path = tmp_path / "config" / "leeward" / "credentials.toml"
    old = os.umask(0o022)
    try:
        store_credentials(path, Credentials(fleet="http://127.0.0.1:7420", token="s3cret"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_credentials(path) == Credentials(fleet="http://127.0.0.1:7420", token="s3cret")
    assert [p.name for p in path.parent.iterdir()] == ["credentials.toml"]  # no temp file left


def test_missing_credentials_say_how_to_sign_in(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError) as info:
        load_credentials(tmp_path / "nope.toml")
    assert str(info.value) == NOT_SIGNED_IN
    broken = tmp_path / "broken.toml"
    broken.write_text("fleet = 'http://x'\n")
    with pytest.raises(CredentialsError, match="leeward login"):
        load_credentials(broken)


# -- errors and rendering --------------------------------------------------------------------


def test_errors_are_one_sentence() -> None:
    assert one_sentence("Cannot reach\n  the fleet") == "Cannot reach the fleet."
    assert one_sentence("Run `leeward up`") == "Run `leeward up`"
    assert format_error("Not signed in: run `leeward login`.") == (
        "Error: Not signed in: run `leeward login`."
    )


def test_when_is_relative() -> None:
    assert when(None) == "never"
    assert when(NOW + timedelta(days=2, hours=3, minutes=5), now=NOW) == "in 2d 3h"
    assert when(NOW + timedelta(minutes=45), now=NOW) == "in 45m"
    assert when(NOW - timedelta(hours=1), now=NOW) == "1h ago"
    assert when(NOW + timedelta(seconds=20), now=NOW) == "in <1m"


def test_status_lists_the_proxies_sessions(tmp_path: Path) -> None:
    import json
    import os

    from tests.cli.sandbox import make_sandbox

    sandbox = make_sandbox(tmp_path)
    assert "No SSH session" in sandbox.run("status", check=True).stdout
    sessions = sandbox.paths.state_dir / "sessions"
    sessions.mkdir(parents=True)
    record = {
        "env": "box",
        "pid": os.getpid(),
        "state": "resuming",
        "source": "cache",
        "rtt": 0.0031,
        "reason": "path silent",
        "dns": "down",
    }
    (sessions / f"{os.getpid()}.json").write_text(json.dumps(record))
    out = sandbox.run("status", check=True).stdout
    assert "box" in out and "resuming" in out and "3.1 ms" in out
    assert "via cache (DNS bypass)" in out and "path silent" in out
    listed = json.loads(sandbox.run("status", "--json", check=True).stdout)
    assert listed[0]["env"] == "box" and listed[0]["dns_down"] is True
