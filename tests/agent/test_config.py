"""The agent's config: what a reload may change (owner, identity, token, fleet) and what only a
restart may (its listeners, its disk, its own files), one rule for the agent and its host."""

from __future__ import annotations

from pathlib import Path

from leeward.agent.config import FIXED_ON_RELOAD, AgentConfig


def config(tmp_path: Path, **changes: object) -> AgentConfig:
    base: dict[str, object] = {
        "environment_id": "e-1",
        "name": "box",
        "fqdn": "box.north.leeward.test",
        "owner": None,
        "listen_address": "127.200.0.1",
        "listen_port": 2222,
        "relay_port": 2223,
        "host_key": "KEY",
        "host_certificate": "CERT",
        "user_ca": "CA",
        "fleet_url": "http://127.0.0.1:7420",
        "agent_token": "lwa_old",
        "heartbeat_seconds": 1.0,
        "home": tmp_path / "home",
        "control_socket": tmp_path / "control",
        "log_file": tmp_path / "agent.log",
    }
    return AgentConfig.model_validate({**base, **changes})


def test_a_claim_is_a_reload_and_a_new_address_a_restart(tmp_path: Path) -> None:
    warm = config(tmp_path)
    claimed = config(tmp_path, owner="ada", host_key="K2", agent_token="lwa_new")
    assert warm.fixed_changes(claimed) == []
    moved = config(tmp_path, listen_address="127.200.0.9", relay_port=3000)
    assert warm.fixed_changes(moved) == ["listen_address", "relay_port"]
    every = config(
        tmp_path,
        environment_id="e-2",
        listen_address="127.200.0.9",
        listen_port=1,
        relay_port=None,
        home=tmp_path / "other",
        control_socket=tmp_path / "c2",
        log_file=tmp_path / "l2",
    )
    assert warm.fixed_changes(every) == list(FIXED_ON_RELOAD)
