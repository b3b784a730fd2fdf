"""`leeward fleet serve`: run the fleet until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from leeward.common.clock import Clock
from leeward.fleet.app import create_app
from leeward.fleet.config import ConfigError, FleetConfig, load_config
from leeward.fleet.runtime import Fleet
from leeward.fleet.state import FLEET
from leeward.providers.base import Provider

log = logging.getLogger("leeward.fleet")


def cannot_listen(host: str, port: int, exc: OSError) -> ConfigError:
    """A listen that failed, as the operator can fix it (not a bug to report)."""
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"Port {port} on {host} is taken (another fleet, or another program): stop it, or "
            "give the fleet a free port (`listen_port` in its config, or --port)."
        )
    return ConfigError(
        f"The fleet cannot listen on {host}:{port}: {exc.strerror or exc}; check `listen_host` "
        "and `listen_port` in its config."
    )


MAX_REQUEST_LINE = 16 * 1024
"""Bytes in a request's first line (aiohttp's default is 8 KiB)."""


@contextlib.asynccontextmanager
async def running_fleet(
    config: FleetConfig,
    *,
    provider: Provider | None = None,
    clock: Clock | None = None,
    background: bool = True,
) -> AsyncIterator[tuple[str, Fleet]]:
    """The fleet listening on its configured address (port 0: any free one); yields its URL."""
    app = create_app(config, provider=provider, clock=clock, background=background)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=5,
        # A request line carries a profile path or query of up to 256 characters of up to 4
        # bytes each, percent-encoded (12 bytes each): over aiohttp's 8 KiB default.
        max_line_size=MAX_REQUEST_LINE,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.listen_host, config.listen_port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise cannot_listen(config.listen_host, config.listen_port, exc) from None
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}"
        fleet = app[FLEET]
        agents_url = url
        if fleet.fabric is not None:
            # Hosts and environments' agents, in their namespaces, reach the fleet on the
            # fabric's address; this machine's clients keep the loopback one, which never
            # leaves it whatever becomes of the fabric.
            address = str(fleet.fabric.fleet_address)
            inner = web.TCPSite(runner, address, port, reuse_address=True)
            try:
                await inner.start()
            except OSError as exc:
                raise cannot_listen(address, port, exc) from None
            agents_url = f"http://{address}:{port}"
        fleet.set_public_url(config.public_url or agents_url)
        yield url, fleet
    finally:
        await runner.cleanup()


async def _serve(config: FleetConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_fleet(config) as (url, fleet):
        log.info(
            "fleet serving %s (store: %s, provider: %s, zone: %s)",
            url,
            fleet.store.describe(),
            fleet.provider.name,
            config.zone,
        )
        await stop.wait()
        log.info("stopping")


def serve(config_path: Path, *, database: str | None = None, port: int | None = None) -> None:
    """Run the fleet from a config file until SIGTERM/SIGINT."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = load_config(config_path)
    if database is not None:
        config.database = database
    if port is not None:
        config.listen_port = port
    asyncio.run(_serve(config))
