"""The local fleet's network: every host a network namespace joined by a veth pair to the root
namespace, which stands for the network itself, where the fleet and the users' clients are. All
of it is read back from the kernel, never from memory, so a restarted `leeward up` finds it:

- host H is the namespace `{prefix}-H`; its veth pair's root end is `{prefix}r{index}` (names
  have 15 characters at most), tagged with the alias `H@region`, its other end `uplink`. It has
  a /30 of the transit network: .1 at the root end, .2 on `uplink`, its default route via .1;
- the fleet's address, the transit network's first, is on the root link `{prefix}fleet`, whose
  alias lists the regions (`name=network,...`);
- each region's network and the transit network are covered by `unreachable` routes in the
  root: a packet to an address routed nowhere else is refused here (No route to host) and never
  leaves the machine by its default route;
- an environment's address is a /32 on its host's `lo`, routed from the root through that
  host's veth with the fleet's address as source: it keeps its address whichever host it is
  on, and sees the network's clients come from the fleet's address.

No sysctl of the root namespace is changed: nothing needs forwarding, so hosts do not reach
each other (a forwarding root would also carry their packets out of the machine). Strict
reverse-path filtering drops only stale packets: every route points back the way replies come.
`ip` acts on the caller's namespace, which must be the root. 127.0.0.0/8 is not routed off `lo`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from subprocess import PIPE
from typing import Any

NETNS_DIR = Path("/run/netns")
UPLINK = "uplink"
DEFAULT_TRANSIT = IPv4Network("198.19.0.0/20")  # RFC 2544 benchmarking space, never routed
IP_SECONDS = 10.0
_PREFIX = re.compile(r"[a-z][a-z0-9]{0,7}")  # no "-": prefix "a" must not own "a-b"'s hosts
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
_FLEET_KINDS = ("dummy", "bridge")  # a bridge without ports serves where there is no dummy
_MISSING = ("does not exist", "Cannot find device", "No such file or directory")


class FabricError(Exception):
    """An `ip` command failed or timed out, or a call named what is not there: the message."""


@dataclass(frozen=True)
class _Link:  # a host, as the root namespace sees it: the root end of its veth pair
    host: str
    region: str
    device: str
    ifindex: int
    peer: int  # the other end's ifindex, in the host's namespace
    up: bool
    gateway: IPv4Address | None  # the other end's transit address


class Fabric:
    """The network of the hosts of `prefix` (one per local fleet; each test makes its own).
    Every call can be made again, by this object or by another after a restart. Calls are
    serialised within one object; two processes must not move the same address at once."""

    def __init__(
        self,
        prefix: str = "lw",
        transit: IPv4Network = DEFAULT_TRANSIT,
        timeout: float = IP_SECONDS,
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"a fabric's prefix is 1 to 8 of a-z0-9, a letter first: {prefix!r}")
        if transit.prefixlen > 29:
            raise ValueError(f"the transit network {transit} has no room for a host")
        self.prefix, self.transit, self.timeout = prefix, transit, timeout
        self._fleet_device = f"{prefix}fleet"
        self._devices = re.compile(rf"{prefix}r\d+")
        self._networks: set[IPv4Network] = set()  # for a teardown after the fleet link is gone
        self._lock = asyncio.Lock()

    @property
    def fleet_address(self) -> IPv4Address:
        """Where the fleet listens, in the root namespace; every host reaches it."""
        return self.transit.network_address + 1

    def namespace(self, host: str) -> Path:
        """The host's network namespace, for `leeward.common.netns.socket_in` or `ip -n`."""
        return NETNS_DIR / f"{self.prefix}-{host}"

    def transit_of(self, index: int) -> tuple[IPv4Interface, IPv4Interface]:
        """The addresses of host `index`'s root and host ends (the first /30 is the fleet's)."""
        base = self.transit.network_address + 4 * (index + 1)
        if index < 0 or base + 3 > self.transit.broadcast_address:
            raise ValueError(f"no host {index} in the transit network {self.transit}")
        return IPv4Interface(f"{base + 1}/30"), IPv4Interface(f"{base + 2}/30")

    @property
    def world(self) -> Path:
        """A name for the root namespace itself (the machine's own network, which leads out):
        where environments' sandboxes reach the outside from (slirp4netns runs there), wherever
        their host's namespace is."""
        return NETNS_DIR / f"{self.prefix}_world"

    async def start(self) -> None:
        """The fleet's address on its link, the transit network covered as unreachable, and
        the root namespace named `world`. Called in the root namespace."""
        device = self._fleet_device
        async with self._lock:
            if not self.world.exists():
                await self._ip(f"netns attach {self.world.name} {os.getpid()}")
            if not await self._json("link", "show", "dev", device, missing_ok=True):
                for kind in _FLEET_KINDS:
                    if (await self._run("link", "add", "name", device, "type", kind))[0] == 0:
                        break
                else:
                    raise FabricError(f"cannot make {device}: no link of kind {_FLEET_KINDS}")
            address = f"address replace {self.fleet_address}/32 dev {device}"
            unreachable = f"route replace unreachable {self.transit}"
            await self._ip(address, f"link set dev {device} up", unreachable)

    async def add_region(self, name: str, network: IPv4Network) -> None:
        """A region, whose network is unreachable but for the addresses attached to hosts."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a region name: {name!r}")
        if network.overlaps(self.transit) or network.is_loopback:  # 127/8 is not routed off lo
            raise ValueError(f"region {name}'s {network} is loopback or in {self.transit}")
        async with self._lock:
            regions = {**await self.regions(), name: network}
            alias = ",".join(f"{region}={net}" for region, net in sorted(regions.items()))
            if len(alias) > 255:  # IFALIASZ
                raise FabricError(f"too many regions to record on {self._fleet_device}")
            self._networks.add(network)
            record = f"link set dev {self._fleet_device} alias {alias}"
            await self._ip(record, f"route replace unreachable {network}")

    async def hosts(self) -> dict[str, str]:
        """The hosts whose links are there: name, region."""
        return {link.host: link.region for link in await self._links()}

    async def ensure_host(self, name: str, region: str, index: int) -> None:
        """Host `name` of `region`, on the transit addresses of `index`. A host found with its
        veth pair whole is kept as it is, up or cut, connections and all; a link missing or
        paired wrongly is made again, and the routes to the addresses on its `lo` with it."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a host name: {name!r}")
        root_end, host_end = self.transit_of(index)
        namespace, device = self.namespace(name).name, f"{self.prefix}r{index}"
        async with self._lock:
            if region not in await self.regions():
                raise FabricError(f"no region {region} in fabric {self.prefix} (add_region)")
            links = await self._links()
            found = next((link for link in links if link.device == device), None)
            if found is not None and found.host not in ("", name):
                raise FabricError(f"{device} (index {index}) is host {found.host}'s, not {name}'s")
            peer = await self._json("link", "show", "dev", UPLINK, netns=namespace, missing_ok=True)
            ends = (peer[0].get("link_index"), peer[0].get("ifindex")) if peer else None
            whole = found is not None and ends == (found.ifindex, found.peer)
            stale = [k.device for k in links if k.host == name and k != found]
            stale += [device] if found is not None and not whole else []
            if not whole and peer:  # its other end goes with it
                await self._ip(f"link delete dev {UPLINK}", netns=namespace)
            await self._ip(*(f"link delete dev {d}" for d in stale), check=False)  # gone, maybe
            root = [] if self.namespace(name).exists() else [f"netns add {namespace}"]
            if not whole:
                root.append(
                    f"link add name {device} type veth peer name {UPLINK} netns {namespace}"
                )
            root += [f"address replace {root_end} dev {device}"]
            root += [f"link set dev {device} alias {name}@{region}"]
            await self._ip(*root, *([] if whole else [f"link set dev {device} up"]))
            inside = [f"address replace {host_end} dev {UPLINK}", f"link set dev {UPLINK} up"]
            default = f"route replace default via {root_end.ip} dev {UPLINK}"
            await self._ip("link set dev lo up", *inside, default, netns=namespace)
            await self._reroute([link for link in await self._links() if link.host == name])

    async def remove_host(self, name: str) -> None:
        """The host's links and namespace gone, and with them its addresses and their routes."""
        async with self._lock:
            links = [f"link delete dev {k.device}" for k in await self._links() if k.host == name]
            if self.namespace(name).exists():
                links.append(f"netns delete {self.namespace(name).name}")
            await self._ip(*links)

    async def attach(self, address: IPv4Address | str, host: str) -> None:
        """`address` on `host` (off any other) and routed to it; if the host's region is cut,
        the route comes with `restore`. A live migration from A to B, as its host agent makes
        it: `begin_move(address)` (new connections are refused, No route to host, and A's
        sockets stay as they are); the blackout; `stage(address, B)`, so that B can listen on
        it before any traffic comes; then `attach(address, B)`. New connections reach B; the
        old ones, made to A, are reset by B's kernel at their next segment."""
        address = IPv4Address(address)
        async with self._lock:
            link = await self._stage(address, host)
            if link.up and link.gateway is not None:
                await self._ip(self._route(address, link))

    async def stage(self, address: IPv4Address | str, host: str) -> None:
        """`address` on `host`'s `lo` (off any other) but not routed to it yet (see `attach`)."""
        async with self._lock:
            await self._stage(IPv4Address(address), host)

    async def begin_move(self, address: IPv4Address | str) -> None:
        """The route to `address` taken away: the region's unreachable route answers for it.
        The address stays on its host's `lo` until `stage` or `attach` puts it elsewhere."""
        async with self._lock:
            await self._unroute(IPv4Address(address))

    async def detach(self, address: IPv4Address | str) -> None:
        """`address` unrouted and off every host."""
        address = IPv4Address(address)
        async with self._lock:
            await self._unroute(address)
            await asyncio.gather(*(self._drop(address, h) for h in await self._holders(address)))

    async def where(self, address: IPv4Address | str) -> str | None:
        """The host whose `lo` holds `address` (during a move, the old one until `stage`)."""
        holders = await self._holders(IPv4Address(address))
        return min(holders) if holders else None

    async def routed_to(self, address: IPv4Address | str) -> str | None:
        """The host the root namespace routes `address` to; None during a move or a cut."""
        hosts = {link.device: link.host for link in await self._links()}
        routes = await self._json("route", "show", "exact", f"{IPv4Address(address)}/32")
        return next((hosts[r["dev"]] for r in routes if r.get("dev") in hosts), None)

    async def cut(self, region: str) -> None:
        """The region's links down, its network cut. The kernel drops the routes through them,
        so clients are refused (No route to host) by the region's unreachable route; inside,
        nothing is told: `uplink` loses its carrier and what is sent out is lost."""
        async with self._lock:
            links = [link for link in await self._links() if link.region == region]
            await self._ip(*(f"link set dev {link.device} down" for link in links))

    async def restore(self, region: str) -> None:
        """The region's links up, and a route to every address found on its hosts' `lo`. The
        hosts forget the neighbours they failed to reach meanwhile (their gateway is left
        INCOMPLETE), so that replies go at once, not at the next ARP try a second later."""
        async with self._lock:
            links = [link for link in await self._links() if link.region == region]
            await self._ip(*(f"link set dev {link.device} up" for link in links))
            flush = f"neighbour flush dev {UPLINK}"
            await asyncio.gather(*(self._ip(flush, netns=f"{self.prefix}-{k.host}") for k in links))
            await self._reroute([link for link in await self._links() if link.region == region])

    async def teardown(self) -> None:
        """Everything of this prefix gone: namespaces, links, routes. Safe to call again, or on
        a fabric never started; raises only if something is left after it."""
        async with self._lock:
            networks = {*self._networks, *(await self.regions()).values(), self.transit}
            commands = [f"link delete dev {link.device}" for link in await self._links()]
            commands += [f"netns delete {name}" for name in self._names()]
            commands += [f"netns delete {self.world.name}"] if self.world.exists() else []
            commands += [f"route delete unreachable {network}" for network in networks]
            await self._ip(*commands, f"link delete dev {self._fleet_device}", check=False)
            left = await self.leftovers()
            if left:
                raise FabricError(f"fabric {self.prefix}'s teardown left {', '.join(left)}")

    async def leftovers(self) -> list[str]:
        """What of this prefix is still there: namespaces, links, unreachable routes."""
        names = [k["ifname"] for k in await self._json("link", "show")]
        links = [n for n in names if self._devices.fullmatch(n) or n == self._fleet_device]
        routes = [r["dst"] for r in await self._json("route", "show", "type", "unreachable")]
        mine = {str(network) for network in {*self._networks, self.transit}}
        left = [f"namespace {n}" for n in self._names()] + [f"link {n}" for n in links]
        left += [f"namespace {self.world.name}"] if self.world.exists() else []
        return left + [f"route unreachable {dst}" for dst in routes if dst in mine]

    @staticmethod
    def probe() -> tuple[bool, str]:
        """Whether this machine can make a fabric and, in a sentence, why not (the local fleet
        then falls back to loopback addresses). Makes a namespace of its own with a veth pair
        and a fleet link in it, and removes it; blocks for some milliseconds."""
        if not sys.platform.startswith("linux"):
            return False, f"network namespaces are Linux's and this is {sys.platform}"
        if os.geteuid() != 0:
            return False, f"network namespaces need root, and this runs as uid {os.geteuid()}"
        ip = shutil.which("ip")
        if ip is None:
            return False, "iproute2's `ip` is not installed (Debian: apt-get install iproute2)"
        name = f"lwprobe{os.getpid()}-{secrets.token_hex(3)}"

        def fails(*commands: str) -> str | None:  # None once one of `commands` succeeds
            failure = None
            for command in commands:
                run = [ip, *command.split()]
                done = subprocess.run(run, capture_output=True, text=True, timeout=IP_SECONDS)
                if done.returncode == 0:
                    return None
                failure = f"`ip {command}` failed: {done.stderr.strip()}"
            return failure

        kinds = (f"-n {name} link add name f type {kind}" for kind in _FLEET_KINDS)
        try:
            veth = f"-n {name} link add name a type veth peer name b"
            failure = fails(f"netns add {name}") or fails(veth) or fails(*kinds)
        except (OSError, subprocess.TimeoutExpired) as error:
            failure = f"`ip` could not be run: {error}"
        finally:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run([ip, "netns", "delete", name], capture_output=True, timeout=10)
        return failure is None, failure or "network namespaces, veth pairs and links can be made"

    # What the system holds, read and changed.

    def _names(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(f"{self.prefix}-"))
        return []

    def _route(self, address: IPv4Address, link: _Link) -> str:
        via = f"via {link.gateway} dev {link.device} src {self.fleet_address}"
        return f"route replace {address}/32 {via}"

    async def _links(self) -> list[_Link]:
        reads = (self._json("link", "show"), self._json("-4", "address", "show"))
        links, addresses = await asyncio.gather(*reads)
        transit = ((a["ifname"], i) for a in addresses for i in a.get("addr_info", []))
        gateways = {n: IPv4Address(i["local"]) + 1 for n, i in transit if i.get("prefixlen") == 30}
        found = []
        for k in (link for link in links if self._devices.fullmatch(link["ifname"])):
            host, _, region = str(k.get("ifalias", "")).partition("@")
            ends, up = (k["ifindex"], k.get("link_index", 0)), "UP" in k["flags"]
            found.append(_Link(host, region, k["ifname"], *ends, up, gateways.get(k["ifname"])))
        return found

    async def regions(self) -> dict[str, IPv4Network]:
        """The regions as recorded on the fleet's link: name, network."""
        found = await self._json("link", "show", "dev", self._fleet_device, missing_ok=True)
        alias = str(found[0].get("ifalias", "")) if found else ""
        pairs = (entry.partition("=") for entry in alias.split(",") if "=" in entry)
        return {name: IPv4Network(network) for name, _, network in pairs}

    async def _lo(self, host: str) -> set[IPv4Address]:
        namespace = self.namespace(host).name
        entries = await self._json("-4", "address", "show", "dev", "lo", netns=namespace)
        found = (info for e in entries for info in e.get("addr_info", []))
        addresses = (IPv4Address(i["local"]) for i in found if i.get("prefixlen") == 32)
        return {address for address in addresses if not address.is_loopback}

    async def _holders(self, address: IPv4Address) -> set[str]:
        hosts = [name.removeprefix(f"{self.prefix}-") for name in self._names()]
        held = await asyncio.gather(*(self._lo(host) for host in hosts))
        return {host for host, addresses in zip(hosts, held, strict=True) if address in addresses}

    async def _stage(self, address: IPv4Address, host: str) -> _Link:
        link = next((link for link in await self._links() if link.host == host), None)
        if link is None:
            raise FabricError(f"no host {host} in fabric {self.prefix}")
        network = (await self.regions()).get(link.region)
        if network is None or address not in network:  # out of it, a move could let it out
            raise FabricError(f"{address} is not in region {link.region}'s network {network}")
        others = await self._holders(address) - {host}
        await asyncio.gather(*(self._drop(address, other) for other in others))
        await self._ip(f"address replace {address}/32 dev lo", netns=self.namespace(host).name)
        return link

    async def _drop(self, address: IPv4Address, host: str) -> None:
        await self._ip(f"address delete {address}/32 dev lo", netns=self.namespace(host).name)

    async def _unroute(self, address: IPv4Address) -> None:
        devices = {link.device for link in await self._links()}
        routes = await self._json("route", "show", "exact", f"{address}/32")
        doomed = [route["dev"] for route in routes if route.get("dev") in devices]
        await self._ip(*(f"route delete {address}/32 dev {device}" for device in doomed))

    async def _reroute(self, links: list[_Link]) -> None:
        links = [link for link in links if link.up and link.gateway is not None]
        held = await asyncio.gather(*(self._lo(link.host) for link in links))
        pairs = zip(links, held, strict=True)
        await self._ip(*[self._route(a, link) for link, on_lo in pairs for a in sorted(on_lo)])

    async def _json(self, *args: str, netns: str = "", missing_ok: bool = False) -> list[Any]:
        code, out, error = await self._run("-json", *args, netns=netns)
        if code != 0:
            if missing_ok and any(sign in error for sign in _MISSING):
                return []
            raise FabricError(f"`ip {' '.join(args)}` failed: {error.strip()}")
        return list(json.loads(out)) if out.strip() else []

    async def _ip(self, *commands: str, netns: str = "", check: bool = True) -> None:
        """`commands` (`ip` without its name) in one `ip -batch`: one process for them all. The
        first failure stops the rest and raises, unless `check` is false (then all are tried)."""
        if not commands:
            return
        options = ("-batch", "-") if check else ("-force", "-batch", "-")
        code, _, error = await self._run(*options, netns=netns, stdin="\n".join(commands) + "\n")
        if code != 0 and check:
            where = f" in {netns}" if netns else ""
            raise FabricError(f"`ip {'; '.join(commands)}`{where} failed: {error.strip()}")

    async def _run(self, *args: str, netns: str = "", stdin: str = "") -> tuple[int, str, str]:
        command = ["ip", *(("-n", netns) if netns else ()), *args]
        child = await asyncio.create_subprocess_exec(*command, stdin=PIPE, stdout=PIPE, stderr=PIPE)
        try:
            async with asyncio.timeout(self.timeout):
                out, error = await child.communicate(stdin.encode())
        except TimeoutError:
            child.kill()
            await child.wait()
            shown = " ".join(command)
            raise FabricError(f"`{shown}` did not answer in {self.timeout:g} s") from None
        except asyncio.CancelledError:  # the command must not go on behind the caller's back
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            raise
        return child.returncode or 0, out.decode(errors="replace"), error.decode(errors="replace")
