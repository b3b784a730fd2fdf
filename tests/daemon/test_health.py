"""Health records on an injected clock, with the probe (the network boundary) scripted: the
state machine, the reasons, and which changes are worth a notification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from leeward.common.clock import ManualClock
from leeward.daemon.health import HealthMonitor, probe_ssh, probe_tcp
from leeward_protocol.daemon import HealthRecord, HealthState
from leeward_protocol.fleet import Environment, EnvironmentState, Hardware


def environment(state: EnvironmentState = EnvironmentState.RUNNING) -> Environment:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Environment(
        id="e-1",
        name="box",
        fqdn="box.north.leeward.test",
        kind="devserver",
        flavor="tiny",
        hardware=Hardware(cpus=1, memory_gib=2),
        region="north",
        host="north-h1",
        address="127.101.0.1",
        ssh_port=2222,
        state=state,
        lifespan="temporary",
        created_at=now,
        updated_at=now,
    )


class Script:
    """The probe's answers, in order: a float is a round trip in ms, an exception a failure."""

    def __init__(self) -> None:
        self.answers: list[float | BaseException] = []

    async def __call__(self, address: str, port: int, seconds: float) -> float:
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def monitor(clock: ManualClock) -> tuple[HealthMonitor, Script, list[HealthRecord]]:
    sent: list[HealthRecord] = []
    script = Script()
    health = HealthMonitor(clock=clock, interval=5.0, notify=sent.append, probe=script)
    return health, script, sent


async def test_a_life_connecting_healthy_reconnecting_unreachable_healthy():
    clock = ManualClock()
    health, script, sent = monitor(clock)
    health.update([environment(EnvironmentState.PROVISIONING)])
    assert sent[-1].state is HealthState.CONNECTING and "north-h1" in sent[-1].reason

    health.update([environment()])
    script.answers = [12.0, 13.0, ConnectionRefusedError(), TimeoutError(), OSError("boom")]
    record = await health.check("e-1")
    assert record is not None and record.state is HealthState.HEALTHY and record.rtt_ms == 12.0
    count = len(sent)
    await health.check("e-1")
    assert len(sent) == count, "a round trip 1 ms longer is not news"

    clock.advance(timedelta(seconds=5))
    record = await health.check("e-1")
    assert record is not None and record.state is HealthState.RECONNECTING
    assert "connection refused" in record.reason and record.since == clock.now()
    await health.check("e-1")
    record = await health.check("e-1")
    assert record is not None and record.state is HealthState.UNREACHABLE
    assert "3 tries" in record.reason and "127.101.0.1:2222" in record.reason

    script.answers = [15.0]
    record = await health.check("e-1")
    assert record is not None and record.state is HealthState.HEALTHY and record.reason == ""
    assert [r.state for r in sent].count(HealthState.UNREACHABLE) == 1


async def test_slow_or_without_fleet_is_degraded_and_the_round_trip_is_smoothed():
    clock = ManualClock()
    health, script, sent = monitor(clock)
    health.update([environment()])
    script.answers = [10.0, 900.0, 900.0, 900.0, 900.0, 10.0]
    await health.check("e-1")
    record = await health.check("e-1")
    assert record is not None and record.state is HealthState.HEALTHY, "one slow probe is noise"
    for _ in range(3):
        record = await health.check("e-1")
    assert record is not None and record.state is HealthState.DEGRADED
    assert record.reason.startswith("Slow:")

    health.set_fleet(False, "Cannot reach the fleet at http://x.")
    assert sent[-1].state is HealthState.DEGRADED and sent[-1].fleet_reachable is False
    assert "Cannot reach the fleet" in sent[-1].reason
    health.set_fleet(True, "")
    assert sent[-1].fleet_reachable is True


async def test_deleted_environments_are_forgotten_with_a_last_word():
    clock = ManualClock()
    health, _, sent = monitor(clock)
    health.update([environment()])
    health.update([environment(EnvironmentState.DELETING)])
    assert sent[-1].state is HealthState.UNREACHABLE and "deleting" in sent[-1].reason
    health.update([])
    assert sent[-1].environment_state is EnvironmentState.DELETED
    assert health.records == {}


async def test_probes_against_real_sockets(unused_tcp_port):
    import asyncio

    async def ssh_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-test\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(ssh_like, "127.0.0.1", unused_tcp_port)
    async with server:
        assert await probe_ssh("127.0.0.1", unused_tcp_port, 2.0) >= 0
        assert await probe_tcp("127.0.0.1", unused_tcp_port, 2.0) >= 0
    try:
        await probe_ssh("127.0.0.1", unused_tcp_port, 2.0)
    except ConnectionRefusedError:
        pass
    else:
        raise AssertionError("a closed port must fail the probe")


async def test_the_proxies_sessions_show_a_resume_and_a_dns_bypass():
    import os

    from leeward.daemon.sessions import ProxySession

    clock = ManualClock()
    health, script, sent = monitor(clock)
    health.update([environment()])
    script.answers = [10.0]
    await health.check("e-1")
    assert sent[-1].state is HealthState.HEALTHY and sent[-1].sessions == 0

    me = os.getpid()
    health.set_sessions([ProxySession("box", me, "resuming", "api", reason="path silent 10 s")])
    assert sent[-1].state is HealthState.RECONNECTING and sent[-1].sessions == 1
    assert "Resuming its SSH session through the relay (path silent 10 s)" in sent[-1].reason

    health.set_sessions(
        [ProxySession("box.north.leeward.test", me, "connected", "cache", 0.002, dns_down=True)]
    )
    assert sent[-1].state is HealthState.DEGRADED and sent[-1].dns_bypass is True
    assert sent[-1].route == "cache" and "DNS bypass" in sent[-1].reason

    health.set_sessions([])
    assert sent[-1].state is HealthState.HEALTHY, "the probes' own view comes back"
    assert (sent[-1].sessions, sent[-1].route, sent[-1].dns_bypass) == (0, None, False)


def test_session_files_of_dead_proxies_and_junk_are_skipped(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from leeward.daemon.sessions import read_sessions

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / "1.json").write_text(
        json.dumps(
            {
                "env": "a",
                "pid": os.getpid(),
                "state": "connected",
                "source": "dns",
                "rtt": 0.0042,
                "resumes": 3,
                "blackout_ms": 17.5,
                "resumed_after": "Connection reset by peer",
            }
        )
    )
    (tmp_path / "2.json").write_text(
        json.dumps({"env": "b", "pid": int(dead.stdout), "state": "connected"})
    )
    (tmp_path / "3.json").write_text("{half a file")
    (tmp_path / "4.json").write_text(json.dumps({"env": "c"}))
    (tmp_path / "5.tmp").write_text("{}")
    sessions = read_sessions(tmp_path)
    assert [(s.env, s.state, s.source, s.rtt_ms) for s in sessions] == [
        ("a", "connected", "dns", 4.2)
    ]
    assert (sessions[0].resumes, sessions[0].blackout_ms) == (3, 17.5)
    assert sessions[0].resumed_after == "Connection reset by peer"
    assert read_sessions(tmp_path / "missing") == []


async def test_a_resume_does_not_hide_an_environment_the_probes_gave_up_on():
    import os

    from leeward.daemon.sessions import ProxySession

    clock = ManualClock()
    health, script, sent = monitor(clock)
    health.update([environment()])
    script.answers = [10.0, ConnectionRefusedError(), ConnectionRefusedError()]
    await health.check("e-1")
    health.set_sessions([ProxySession("box", os.getpid(), "resuming", "api")])
    await health.check("e-1")
    assert sent[-1].state is HealthState.RECONNECTING
    await health.check("e-1")
    script.answers = [ConnectionRefusedError()]
    await health.check("e-1")
    assert sent[-1].state is HealthState.UNREACHABLE
    assert "still trying to resume" in sent[-1].reason


async def test_a_resume_too_short_to_see_shows_for_a_moment_with_its_real_length():
    """A 17 ms reset ends before the daemon reads the session file again: the proxy counts its
    resumes, and each new one shows as reconnecting for RESUME_SHOWN, saying how long it was
    dark, then healthy again (on the clock, not by waiting)."""
    import os

    from leeward.daemon.health import RESUME_SHOWN
    from leeward.daemon.sessions import ProxySession
    from tests.conftest import until

    clock = ManualClock()
    health, script, sent = monitor(clock)
    health.update([environment()])
    script.answers = [10.0]
    await health.check("e-1")
    me = os.getpid()
    health.set_sessions([ProxySession("box", me, "connected", "api")])
    assert sent[-1].state is HealthState.HEALTHY

    for count in (1, 2):
        health.set_sessions(
            [
                ProxySession(
                    "box",
                    me,
                    "connected",
                    "api",
                    resumes=count,
                    blackout_ms=17.3,
                    resumed_after="connection reset",
                )
            ]
        )
        assert sent[-1].state is HealthState.RECONNECTING, count
        assert sent[-1].reason == (
            "Resumed its SSH session through the relay after 17.3 ms (connection reset)."
        )
        # the task that ends the showing is parked on the clock
        await until(lambda: clock.sleeping() == 1, "the showing's end parked on the clock")
        clock.advance(RESUME_SHOWN / 2)
        assert sent[-1].state is HealthState.RECONNECTING, "shown for RESUME_SHOWN"
        assert clock.sleeping() == 1, "not due yet"
        clock.advance(RESUME_SHOWN)
        await until(lambda: sent[-1].state is HealthState.HEALTHY, f"healthy again ({count})")

    # the same count again (another write of the file) is no new resume; nor is a new proxy's
    before = len(sent)
    health.set_sessions([ProxySession("box", me, "connected", "api", 0.003, resumes=2)])
    health.set_sessions([ProxySession("box", me + 1, "connected", "api", resumes=5)])
    assert all(r.state is HealthState.HEALTHY for r in sent[before:])
    await health.close()


async def test_a_stopped_environment_is_stopped_not_unreachable_and_healthy_once_started():
    """Idle stop: the fleet says stopped; the record says so (with how to start it), whatever
    the probes said while it went down, and is probed again once it runs."""
    clock = ManualClock()
    health, script, sent = monitor(clock)
    health.update([environment()])
    script.answers = [10.0, ConnectionRefusedError(), ConnectionRefusedError()]
    for _ in range(3):
        await health.check("e-1")
    assert sent[-1].state is HealthState.RECONNECTING  # going down, before the fleet says why

    health.update([environment(EnvironmentState.STOPPED)])
    assert sent[-1].state is HealthState.STOPPED
    assert sent[-1].reason == (
        "box is stopped (idle; its home is kept): the next connection, or `leeward start box`, "
        "starts it."
    )
    await health.check("e-1")  # not probed (no answer is scripted): still stopped
    assert sent[-1].state is HealthState.STOPPED and sent[-1].rtt_ms is None

    health.update([environment()])
    assert sent[-1].state is HealthState.CONNECTING, "started again, not probed yet"
    script.answers = [12.0]
    await health.check("e-1")
    assert sent[-1].state is HealthState.HEALTHY
