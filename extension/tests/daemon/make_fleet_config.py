"""Writes a small embedded-fleet config for the extension's daemon test (daemon.test.ts):
two regions on random /24s in 127.110-199.x (the fleet tests' loopback range), one host each,
a `tiny` flavor and a `web` profile. Usage: python make_fleet_config.py PATH; prints the port."""

import ipaddress, random, socket, sys
from pathlib import Path
from leeward.fleet.config import FleetConfig, HostConfig, RegionConfig, dump_config
from leeward_protocol.fleet import ContainerProfile, Flavor, FlavorKind, Hardware

def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]

octets = random.sample(range(110, 200), 2)
nets = [ipaddress.IPv4Network(f"127.{o}.{random.randint(0,255)}.0/24") for o in octets]
config = FleetConfig.model_validate({
    "zone": "leeward.test",
    "listen_port": free_port(),
    "heartbeat_seconds": 1.0,
    "pool_interval_seconds": 0.5,
    "provider": {"ssh_port": free_port(str(nets[0][1])), "stop_agents_on_exit": True},
    "regions": [
        RegionConfig(name=name, network=net, hosts=[HostConfig(name=f"{name}-h1", cpus=8, memory_gib=16)])
        for name, net in zip(["north", "south"], nets)
    ],
    "flavors": [Flavor(name="tiny", kind=FlavorKind.VM, hardware=Hardware(cpus=1, memory_gib=1))],
    "profiles": [ContainerProfile(name="web", hardware=Hardware(cpus=1, memory_gib=1), warm_pool=0)],
})
path = Path(sys.argv[1])
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(dump_config(config))
print(config.listen_port)
