"""Two fleet replicas on one PostgreSQL, as docs/operator.md describes: each environment is
started once, by one of them, whoever starts first; and when one is killed in the middle of its
starts, the other finishes them, with no agent orphaned and no environment stuck."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import select

from leeward.fleet.bootstrap import issue_token
from leeward.fleet.config import FleetConfig, dump_config, load_config
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import EnvironmentRow
from leeward.providers.local import LocalProvider
from leeward_protocol.fleet import Role
from tests.conftest import Api, free_port, small_config, until
from tests.fleet.test_restart import FleetProcess

pytestmark = pytest.mark.postgres


def agents_of(data_dir: Path) -> dict[str, list[int]]:
    """Every agent process running for `data_dir`'s environments, by environment id (read
    from /proc: what runs, not what the fleet believes)."""
    found: dict[str, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"leeward.agent" not in argv:
            continue
        for arg in argv:
            path = Path(arg.decode(errors="replace"))
            if path.name == "agent.json" and path.parent.parent == data_dir:
                found.setdefault(path.parent.name, []).append(int(proc.name))
    return found


async def rows(store: Store) -> list[EnvironmentRow]:
    async with store.read() as session:
        return list((await session.execute(select(EnvironmentRow))).scalars().all())


class Replicas:
    """Two `leeward fleet serve` processes with one config but their own ports."""

    def __init__(self, tmp_path: Path, config: FleetConfig) -> None:
        self.processes: list[FleetProcess] = []
        self.urls: list[str] = []
        for name in ("a", "b"):
            config.listen_port = free_port()
            path = tmp_path / f"fleet-{name}.toml"
            path.write_text(dump_config(config))
            self.processes.append(FleetProcess(path, tmp_path / f"fleet-{name}.log"))
            self.urls.append(f"http://127.0.0.1:{config.listen_port}")

    async def start(self, http) -> None:
        """Both at the same moment: each process is launched before either is waited for."""
        pairs = zip(self.processes, self.urls, strict=True)
        await asyncio.gather(*(process.start(url, http) for process, url in pairs))

    def logs(self) -> str:
        return "\n".join(p.log.read_text(errors="replace")[-3000:] for p in self.processes)

    def stop(self) -> None:
        for p in self.processes:
            if p.proc is not None and p.proc.poll() is None:
                p.stop(signal.SIGTERM)


async def test_two_replicas_started_together_start_each_environment_once(
    tmp_path, http, postgres_url
):
    config = small_config(tmp_path, postgres_url, regions=1, hosts=2, warm_pool=3)
    config.pool_interval_seconds = 0.2
    config.lease_seconds = 3.0
    assert config.provider.data_dir is not None
    data_dir = config.provider.data_dir.resolve()
    replicas = Replicas(tmp_path, config)
    store = Store(postgres_url)
    try:
        # Empty pools, both replicas at once: each refills, recovers and places at the same
        # moment as the other.
        await replicas.start(http)

        async def pool_full() -> bool:
            states = [r.state for r in await rows(store)]
            return states.count("warm") >= 3 and "provisioning" not in states

        await until(pool_full, "the warm pool is full", timeout=120)
        made = await rows(store)
        assert [r.state for r in made] == ["warm"] * 3, (
            f"one pool of 3, started once: {[(r.name, r.state, r.status_message) for r in made]}"
            f"\n{replicas.logs()}"
        )
        # Each started once: one agent each, running, none failed by the other replica.
        agents = agents_of(data_dir)
        assert sorted(agents) == sorted(r.id for r in made), agents
        assert all(len(pids) == 1 for pids in agents.values()), agents
        # (The second replica's region gateway may find its address in use: that is the
        # first's, on this one machine, and only a client's RTT probe.)
        logs = replicas.logs()
        assert "failed to start" not in logs, logs

        # Replica a is killed in the middle of its starts; b takes them over once a's leases
        # expire, adopting the agents a started: none orphaned, none stuck, none twice.
        operator_config = load_config(replicas.processes[0].config_path)
        token = await issue_token(operator_config, "alice", Role.USER)
        api = Api(replicas.urls[0], http, token)
        made_ids = []
        for i in range(4):
            body = {"kind": "devserver", "flavor": "tiny", "name": f"dev{i}"}
            status, env = await api.call("POST", "/v1/environments", body)
            assert status == 202, env
            made_ids.append(env["id"])
        assert replicas.processes[0].stop(signal.SIGKILL) == -signal.SIGKILL

        async def settled() -> bool:
            now = {r.id: r.state for r in await rows(store)}
            return all(now[i] == "running" for i in made_ids)

        try:
            await until(settled, "replica b finishes a's starts", timeout=120)
        except AssertionError as exc:
            now = [(r.name, r.state, r.status_message) for r in await rows(store)]
            raise AssertionError(f"{exc}: {now}\n{replicas.logs()}") from None
        live = {r.id for r in await rows(store) if r.state in ("running", "warm")}
        agents = agents_of(data_dir)
        assert sorted(agents) == sorted(live), (agents, live)
        assert all(len(pids) == 1 for pids in agents.values()), agents
        b = Api(replicas.urls[1], http, token)
        for env_id in made_ids:
            status, env = await b.call("GET", f"/v1/environments/{env_id}")
            assert (status, env["state"]) == (200, "running"), env
    finally:
        replicas.stop()
        await LocalProvider(data_dir, stop_agents_on_exit=True).close()
        # And whatever no pid file names, should a start have been cut short unrecorded: the
        # test leaves no agent behind even when it fails.
        for pids in agents_of(data_dir).values():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        await store.close()
