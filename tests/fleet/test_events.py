"""The event stream (`GET /v1/events`, Server-Sent Events): every change to the caller's
environments, in order, once; resumable from the last id; other users' changes never shown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy import func, select

from leeward.client.api import FleetClient
from leeward.common.clock import SystemClock
from leeward.fleet.events import EventLog
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import EventRow
from leeward_protocol.fleet import EventType, FleetEvent
from tests.conftest import small_config


class Follower:
    """Reads one event stream into a list in the background."""

    def __init__(self, url: str, token: str, after: int | None = None) -> None:
        self.url, self.token, self.after = url, token, after
        self.events: list[FleetEvent] = []
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    async def _run(self) -> None:
        async with FleetClient(self.url, self.token) as fleet:
            async for event in fleet.events(self.after):
                self.events.append(event)
                self._arrived.set()

    async def until(self, predicate, timeout: float = 30.0) -> list[FleetEvent]:
        async with asyncio.timeout(timeout):
            while not predicate(self.events):
                assert self._task is not None
                if self._task.done():
                    self._task.result()
                    raise AssertionError("the stream ended")
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), 0.5)
        return self.events

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Follower]:
        self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            yield self
        finally:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


LIFE = ["provisioning", "running", "deleting", "deleted"]


def states_of(events: list[FleetEvent], env_id: str) -> list[str]:
    """The states an environment went through, in order. Other changes within a state (the
    agent's setup and sync reports) are events too; they repeat the state, so runs of one
    state count once."""
    states = [e.environment.state for e in events if e.environment and e.environment.id == env_id]
    return [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]


async def test_every_change_streams_in_order_and_resumes_from_any_id(
    start_fleet, database_url, tmp_path
):
    config = small_config(tmp_path, database_url)
    async with start_fleet(config) as f:
        bob = await f.user("bob")
        alice = Follower(f.url, f.api.token)
        bobs = Follower(f.url, bob.token)
        async with alice.running(), bobs.running():
            first = await alice.until(lambda es: len(es) >= 1)
            assert first[0].type == EventType.RESET, "a stream with no id starts with a reset"
            await bobs.until(lambda es: len(es) >= 1)

            status, env = await f.api.call(
                "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny"}
            )
            assert status == 202, env
            await f.api.wait_state(env["id"], {"running"})
            status, _ = await f.api.call("DELETE", f"/v1/environments/{env['id']}")
            assert status == 202
            events = await alice.until(lambda es: "deleted" in states_of(es, env["id"]))
            assert states_of(events, env["id"]) == LIFE
            ids = [e.id for e in events]
            assert ids == sorted(set(ids)), f"ids must grow, without repeats: {ids}"
            assert events[-1].environment and events[-1].environment.owner == "alice"

            # Bob's stream carries only Bob's environments.
            status, mine = await bob.call(
                "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny"}
            )
            assert status == 202
            seen = await bobs.until(lambda es: any(e.environment for e in es))
            assert {e.environment.id for e in seen if e.environment} == {mine["id"]}

        # Resume from every id Alice saw: exactly the events after it, once each.
        for cut in range(len(events)):
            again = Follower(f.url, f.api.token, after=events[cut].id)
            async with again.running():
                wanted = events[cut + 1 :]
                count = len(wanted)
                got = await again.until(lambda es, n=count: len(es) >= n)
                assert [e.id for e in got] == [e.id for e in wanted]
                assert [e.environment for e in got] == [e.environment for e in wanted]
        await bob.call("DELETE", f"/v1/environments/{mine['id']}")


async def test_a_resume_from_an_id_no_longer_kept_gets_a_reset(start_fleet, sqlite_url, tmp_path):
    config = small_config(tmp_path, sqlite_url)
    async with start_fleet(config) as f:
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny"}
        )
        assert status == 202
        await f.api.wait_state(env["id"], {"running"})
        await f.api.call("DELETE", f"/v1/environments/{env['id']}")
        await f.api.wait_state(env["id"], {"deleted"})
        await f.fleet.events.prune(timedelta(0))  # everything but the newest
        async with f.fleet.store.read() as session:
            assert await session.scalar(select(func.count()).select_from(EventRow)) == 1
        head = await f.fleet.events.head()

        stale = Follower(f.url, f.api.token, after=1)
        async with stale.running():
            got = await stale.until(lambda es: len(es) >= 1)
            assert got[0].type == EventType.RESET and got[0].id == head

        # From the head itself, nothing was lost: no reset, just what comes next.
        current = Follower(f.url, f.api.token, after=head)
        async with current.running():
            _, env = await f.api.call(
                "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny"}
            )
            got = await current.until(lambda es: len(es) >= 1)
            assert got[0].type == EventType.ENVIRONMENT and got[0].id == head + 1
            await f.api.wait_state(env["id"], {"running"})
            await f.api.call("DELETE", f"/v1/environments/{env['id']}")


async def test_a_bad_last_event_id_is_a_clear_4xx(start_fleet, sqlite_url, tmp_path):
    config = small_config(tmp_path, sqlite_url)
    async with start_fleet(config) as f:
        status, body = await f.api.call("GET", "/v1/events", headers={"Last-Event-ID": "abc"})
        assert status == 422
        assert body["error"]["field"] == "Last-Event-ID"
        assert "number" in body["error"]["message"]
        status, body = await f.api.call("GET", "/v1/events?all=true")
        assert status == 403


async def test_concurrent_changes_reach_the_stream_without_gaps(
    start_fleet, database_url, tmp_path
):
    """Many transactions commit at once (on PostgreSQL, in any order): a stream that follows
    them live receives exactly the events that are in the log afterwards, in id order."""
    config = small_config(tmp_path, database_url, host_cpus=64, host_memory_gib=256)
    async with start_fleet(config) as f:
        live = Follower(f.url, f.api.token)
        async with live.running():
            await live.until(lambda es: len(es) >= 1)
            made = await asyncio.gather(
                *(
                    f.api.call("POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny"})
                    for _ in range(12)
                )
            )
            ids = [body["id"] for status, body in made if status in (201, 202)]
            assert len(ids) == 12
            for env_id in ids:
                await f.api.wait_state(env_id, {"running"})
            await asyncio.gather(
                *(f.api.call("DELETE", f"/v1/environments/{env_id}") for env_id in ids)
            )
            for env_id in ids:
                await f.api.wait_state(env_id, {"deleted"})
            logged = await f.fleet.events.read_after(0, "alice", limit=10_000)
            streamed = await live.until(lambda es: len(es) >= len(logged) + 1)
        assert [e.id for e in streamed[1:]] == [e.id for e in logged]
        for env_id in ids:
            assert states_of(logged, env_id) == LIFE


async def test_the_sequencer_stops_when_a_commit_and_the_close_arrive_together(tmp_path):
    """A commit's wake-up and the close's cancel in the same turn of the loop: on Python 3.11,
    `asyncio.wait_for` handed back the wake-up and swallowed the cancel, so the sequencer went
    round again and the fleet's close waited for it for ever (a CI run hung 300 s so)."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}")
    try:
        for _ in range(20):
            log = EventLog(store, "test.", SystemClock(), poll_seconds=30.0)
            log.start()
            await asyncio.sleep(0)  # the sequencer is waiting for a commit
            for callback in store.committed:
                callback()  # a commit, then at once the close (which cancels the sequencer)
            async with asyncio.timeout(5):
                await log.close()
    finally:
        await store.close()
