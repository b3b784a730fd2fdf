"""What OpenSSH needs to reach environments: the user's key and certificate, an ssh config with
one entry per running environment, and a known_hosts that trusts the fleet's host CA.

Every entry pins `HostKeyAlias` to the environment's fully qualified name, so whichever address
reaches it, ssh checks the host certificate against that name. Host key checking is never turned
off here. Paths are absolute: OpenSSH expands `~` from the passwd entry, not from $HOME.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from leeward.client.paths import Paths
from leeward.common import sshcert
from leeward.common.files import write_private
from leeward_protocol.fleet import CONNECTABLE_STATES, Environment, SSHAuthorities

HEADER = "# Written by `leeward config-ssh`; rewritten every time it runs: do not edit.\n"
RENEW_BEFORE_SECONDS = 3600
"""A certificate with less than this left is renewed before ssh needs it."""


@dataclass(frozen=True)
class SSHEntry:
    alias: str
    fqdn: str
    address: str
    port: int
    relay_port: int | None = None


def leeward_executable() -> str:
    """The `leeward` command next to this Python (a venv's), else the one on PATH."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "leeward"
    if beside.exists():
        return str(beside.absolute())
    return shutil.which("leeward") or "leeward"


def entries_for(environments: Iterable[Environment]) -> list[SSHEntry]:
    """One entry per environment that can take a connection now, or once its connection has
    started it (stopped for being idle: `leeward proxy` starts it), sorted by name."""
    entries = [
        SSHEntry(
            alias=e.name,
            fqdn=e.fqdn,
            address=e.address,
            port=e.ssh_port,
            relay_port=e.relay_port,
        )
        for e in environments
        if e.state in CONNECTABLE_STATES and e.address and e.ssh_port
    ]
    return sorted(entries, key=lambda e: e.alias)


def _quote(value: str | Path) -> str:
    text = str(value)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def render_ssh_config(
    entries: Iterable[SSHEntry], *, user: str, paths: Paths, proxy: str | None = None
) -> str:
    """One entry per environment. With `proxy` (the `leeward` command), connections go through
    `leeward proxy`, the resumable relay; `ssh -o ProxyCommand=none NAME` still goes straight
    to the agent's SSH server at HostName:Port."""
    identity = paths.identity.absolute()
    certificate = paths.certificate.absolute()
    known_hosts = paths.known_hosts.absolute()
    blocks = [HEADER]
    for entry in entries:
        through = ""
        if proxy is not None and entry.relay_port is not None:
            through = (
                f"    ProxyCommand {_quote(proxy)} proxy %n --known-hosts {_quote(known_hosts)}\n"
            )
        blocks.append(
            f"\nHost {entry.alias} {entry.fqdn}\n"
            f"    HostName {entry.address}\n"
            f"    Port {entry.port}\n"
            f"    User {user}\n"
            f"    HostKeyAlias {entry.fqdn}\n"
            f"    IdentityFile {_quote(identity)}\n"
            f"    CertificateFile {_quote(certificate)}\n"
            f"    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {_quote(known_hosts)}\n"
            f"    StrictHostKeyChecking yes\n"
            f"{through}"
        )
    return "".join(blocks)


def render_known_hosts(authorities: SSHAuthorities) -> str:
    return (
        "# Written by `leeward config-ssh`: the fleet's host CA signs every environment.\n"
        f"@cert-authority *.{authorities.zone} {authorities.host_ca.strip()}\n"
    )


def write_ssh_files(
    paths: Paths,
    *,
    environments: Iterable[Environment],
    user: str,
    authorities: SSHAuthorities,
    proxy: str | None = None,
) -> list[SSHEntry]:
    entries = entries_for(environments)
    write_private(paths.known_hosts, render_known_hosts(authorities), mode=0o644)
    config = render_ssh_config(entries, user=user, paths=paths, proxy=proxy)
    write_private(paths.ssh_config, config)
    return entries


# -- the user's ~/.ssh/config ------------------------------------------------------------------


def include_line(paths: Paths) -> str:
    return f"Include {_quote(paths.ssh_config.absolute())}"


def has_include(user_config: Path, paths: Paths) -> bool:
    try:
        lines = user_config.read_text().splitlines()
    except FileNotFoundError:
        return False
    wanted = include_line(paths).split(None, 1)[1]
    for line in lines:
        words = line.strip().split(None, 1)
        if len(words) == 2 and words[0].lower() == "include" and words[1].strip() == wanted:
            return True
    return False


def add_include(user_config: Path, paths: Paths) -> bool:
    """Put the Include line at the top of the user's ssh config (OpenSSH takes the first value
    it reads, so later `Host *` blocks cannot override the entries). False if already there."""
    if has_include(user_config, paths):
        return False
    try:
        old = user_config.read_text()
        mode = user_config.stat().st_mode & 0o777
    except FileNotFoundError:
        old, mode = "", 0o600
    new = f"# Added by `leeward config-ssh`.\n{include_line(paths)}\n\n{old}"
    write_private(user_config, new, mode=mode)
    return True


# -- key and certificate -----------------------------------------------------------------------


def ensure_identity(paths: Paths) -> bool:
    """Create an ed25519 key pair at `paths.identity` if there is none. True if created."""
    if paths.identity.exists():
        return False
    import getpass

    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519", comment=f"{getpass.getuser()}@leeward")
    write_private(paths.identity, key.export_private_key().decode())
    write_private(_public_path(paths), key.export_public_key().decode(), mode=0o644)
    return True


def _public_path(paths: Paths) -> Path:
    return paths.identity.with_name(paths.identity.name + ".pub")


def public_key(paths: Paths) -> str:
    pub = _public_path(paths)
    if pub.exists():
        return pub.read_text().strip()
    import asyncssh

    key = asyncssh.read_private_key(str(paths.identity))
    return str(key.export_public_key().decode().strip())


def certificate_needs_renewal(paths: Paths, *, now: float | None = None) -> bool:
    try:
        line = paths.certificate.read_text().strip()
    except FileNotFoundError:
        return True
    valid_before = sshcert.valid_before(line)
    if valid_before is None:
        return True
    if valid_before == sshcert.FOREVER:
        return False
    return valid_before - (time.time() if now is None else now) < RENEW_BEFORE_SECONDS
