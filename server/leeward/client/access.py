"""The signed-in user's access, shared by the CLI and the daemon: sign-in, the SSH key and its
certificate (renewed when less than an hour is left), and the ssh files kept fresh."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from leeward.client.credentials import Credentials, store_credentials
from leeward.client.paths import Paths
from leeward_protocol.fleet import SSHAuthorities, WhoAmI

if TYPE_CHECKING:
    from leeward.client.api import FleetClient
    from leeward.client.sshconfig import SSHEntry


class AccessError(Exception):
    """Signing in failed; the message says what to do."""


async def sign_in(paths: Paths, url: str, token: str) -> WhoAmI:
    """Check the token, store it, make sure there is a key, and certify it."""
    from leeward.client.api import FleetClient
    from leeward.common.errors import FleetError

    async with FleetClient(url, token) as fleet:
        try:
            who = await fleet.whoami()
        except FleetError as exc:
            if exc.status == 401:
                raise AccessError(
                    f"The fleet at {fleet.url} did not accept this token: check it, or ask "
                    "an admin for a new one (`leeward fleet token create`)."
                ) from None
            raise
        store_credentials(paths.credentials, Credentials(fleet=fleet.url, token=token))
        await refresh_certificate(fleet, paths, force=True)
    return who


async def refresh_certificate(fleet: FleetClient, paths: Paths, *, force: bool = False) -> bool:
    """Get a new user certificate when the current one has less than an hour left (or there is
    none). True if renewed."""
    from leeward.client.sshconfig import certificate_needs_renewal, ensure_identity, public_key
    from leeward.common.files import write_private

    created = ensure_identity(paths)
    if not (force or created or certificate_needs_renewal(paths)):
        return False
    certificate = await fleet.certificate(public_key(paths))
    write_private(paths.certificate, certificate.certificate.strip() + "\n", mode=0o644)
    return True


async def refresh_ssh(fleet: FleetClient, paths: Paths) -> tuple[list[SSHEntry], SSHAuthorities]:
    """Rewrite ~/.ssh/leeward/config and known_hosts from the fleet; renew the certificate.
    Every entry goes through `leeward proxy` (the resumable relay)."""
    from leeward.client.sshconfig import leeward_executable, write_ssh_files

    await refresh_certificate(fleet, paths)
    who, authorities, listing = await asyncio.gather(
        fleet.whoami(), fleet.authorities(), fleet.environments()
    )
    entries = write_ssh_files(
        paths,
        environments=listing.environments,
        user=who.user,
        authorities=authorities,
        proxy=leeward_executable(),
    )
    return entries, authorities
