"""The embedded fleet's files: its config, and a DNS port free for both UDP and TCP."""

from __future__ import annotations

import socket
from pathlib import Path

from leeward.cli.embedded import EmbeddedFleet, dns_port_free
from leeward.client.paths import Paths
from leeward.fleet.config import load_config


def test_the_embedded_fleet_gets_a_free_dns_port(tmp_path: Path) -> None:
    paths = Paths(
        config_dir=tmp_path / "config",
        data_dir=tmp_path / "data",
        state_dir=tmp_path / "state",
        ssh_dir=tmp_path / "ssh",
    )
    embedded = EmbeddedFleet.of(paths)
    assert embedded.ensure_config(None)
    first = load_config(embedded.config_path).dns
    assert first.port != 5353 and dns_port_free(first.listen_host, first.port)
    assert embedded.ensure_dns_port() == f"127.0.0.1:{first.port}"  # free: kept

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:  # only UDP is taken
        taken.bind(("127.0.0.1", first.port))
        moved = embedded.ensure_dns_port()
    assert moved is not None and moved != f"127.0.0.1:{first.port}"
    assert load_config(embedded.config_path).dns.port == int(moved.rsplit(":", 1)[1])
