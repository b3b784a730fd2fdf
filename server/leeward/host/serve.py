"""`leeward host serve`: the host agent's process. It listens for its fleet's commands (inside its
network namespace, with the local fabric), and tells the fleet it is alive, where it listens and
what runs on it, every heartbeat, with its host token. A fleet that cannot be reached is tried
again with backoff, and said once per outage; a fleet that refuses the token is said loudly.

Environments outlive the host agent (a restart, `kill -9` included, finds them again) unless
`stop_environments_on_exit` says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from ipaddress import IPv4Network
from typing import Any

import aiohttp
from aiohttp import web

from leeward.common.backoff import Backoff
from leeward.common.clock import Clock, SystemClock
from leeward.common.netns import socket_in
from leeward.host.agent import HostAgent
from leeward.host.config import HostAgentConfig
from leeward.providers.fabric import DEFAULT_TRANSIT, Fabric
from leeward.providers.local import LocalProvider
from leeward_protocol.host import HostAck

log = logging.getLogger("leeward.host")


class Heartbeats:
    """The host's heartbeats to its fleet; `interval` follows the fleet's answer."""

    def __init__(
        self, agent: HostAgent, token: str, clock: Clock, http: aiohttp.ClientSession
    ) -> None:
        self.agent = agent
        self.token = token
        self.clock = clock
        self.http = http
        self.interval = agent.config.heartbeat_seconds
        self.beats = 0
        self._failing: str | None = None

    async def once(self) -> float:
        """One heartbeat; the seconds to wait before the next."""
        config = self.agent.config
        url = f"{config.fleet_url.rstrip('/')}/v1/hosts/{config.name}/heartbeat"
        status = await self.agent.status()
        try:
            async with self.http.post(
                url,
                json=status.wire(),
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                text = await response.text()
                code = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._fail(f"the fleet at {config.fleet_url} does not answer ({type(exc).__name__})")
            return -1.0
        if code in (401, 403):
            self._fail(f"the fleet refuses this host's token ({code}: {text[:300]})", loud=True)
            return max(self.interval, 30.0)
        if code != 200:
            self._fail(f"the fleet answered {code}: {text[:300]}")
            return -1.0
        self.interval = HostAck.model_validate_json(text).interval_seconds
        if self._failing is not None:
            log.info("the fleet hears this host again")
        elif self.beats == 0:
            log.info("joined the fleet at %s as host %s", config.fleet_url, config.name)
        self._failing = None
        self.beats += 1
        return self.interval

    def _fail(self, why: str, *, loud: bool = False) -> None:
        if why != self._failing:
            (log.error if loud else log.warning)("heartbeat: %s; trying again", why)
        self._failing = why

    async def run(self) -> None:
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            wait = await self.once()
            if wait < 0:
                # Never longer than a heartbeat: the fleet hears the host again within one
                # interval of coming back (after a region's links are restored, say).
                wait = min(backoff.next(), self.interval)
            else:
                backoff.reset()
            await self.clock.sleep(wait)


def _connector(config: HostAgentConfig) -> aiohttp.TCPConnector:
    """Connections to the fleet leave from the host's own network (its namespace, if any)."""
    netns = config.netns
    if netns is None:
        return aiohttp.TCPConnector()

    def made_there(info: Any) -> socket.socket:
        return socket_in(netns, info[0], info[1])

    return aiohttp.TCPConnector(socket_factory=made_there)


async def serve(config: HostAgentConfig, clock: Clock | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    clock = clock or SystemClock()
    token = config.token()
    fabric = None
    if config.netns is not None:
        assert config.fabric_prefix is not None
        transit = IPv4Network(config.fabric_transit) if config.fabric_transit else DEFAULT_TRANSIT
        fabric = Fabric(config.fabric_prefix, transit)
    provider = LocalProvider(
        config.data_dir,
        sandboxes=config.sandboxes,
        image_cache=config.image_cache,
        netns=config.netns,
        egress=fabric.world if fabric is not None else None,
    )
    agent = HostAgent(config, provider, fabric, lambda: clock.now().timestamp())
    runner = web.AppRunner(agent.app(), access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site: web.BaseSite
        if config.netns is not None:  # listening inside the host's network
            sock = socket_in(config.netns)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((config.listen_host, config.listen_port))
            sock.listen(128)
            site = web.SockSite(runner, sock)
        else:
            site = web.TCPSite(runner, config.listen_host, config.listen_port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen on {config.listen_host}:{config.listen_port}: {exc}"
            ) from None
        host, port = runner.addresses[0][:2]
        agent.url = config.advertise_url or f"http://{host}:{port}"
        log.info(
            "host %s serving its fleet's commands at %s (%s; %s)",
            config.name,
            agent.url,
            "its own network namespace" if config.netns else "this machine's network",
            provider.isolation,
        )
        async with aiohttp.ClientSession(connector=_connector(config)) as http:
            beats = asyncio.create_task(Heartbeats(agent, token, clock, http).run())
            try:
                await stop.wait()
            finally:
                beats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beats
        log.info("host %s stopping", config.name)
        if config.stop_environments_on_exit:  # its own; other hosts may share this disk
            await provider.power_off(await asyncio.to_thread(agent.mine))
    finally:
        await runner.cleanup()
        await provider.close()
