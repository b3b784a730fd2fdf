"""The setup runner on its own: a temporary home, real bash, no network."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from leeward.agent.fleet import parse, report_body
from leeward.agent.setup import (
    LOG_TAIL_BYTES,
    STATE_DIR,
    Reporter,
    SetupRun,
    StepError,
    checked,
    environment,
    log_tail,
    slug,
)
from leeward.common.errors import FleetError
from leeward_protocol.fleet import AgentReport, SetupItem, SetupState
from leeward_protocol.profile import AgentProfile, SetupStep
from tests.conftest import until


def step(name: str, script: str, *, kind: str = "feature", **more: object) -> SetupStep:
    wire = SetupStep(
        kind=kind,
        name=name,
        script=script,
        files=more.pop("files", {}),  # type: ignore[arg-type]
        digest=str(more.pop("digest", f"d-{name}-{hash(script)}")),
        timeout_seconds=float(more.pop("timeout", 30.0)),  # type: ignore[arg-type]
    ).wire()
    return parse(SetupStep, wire)  # as the agent reads it from the wire


class Reports:
    """Every report, as the fleet would validate it."""

    def __init__(self) -> None:
        self.bodies: list[AgentReport] = []

    async def __call__(self, items: list[SetupItem]) -> None:
        self.bodies.append(AgentReport.model_validate(report_body("e-test", setup=items)))

    def states(self, name: str) -> list[str]:
        seen: list[str] = []
        for body in self.bodies:
            assert body.setup is not None
            state = next(i.state for i in body.setup if i.name == name)
            if not seen or seen[-1] != state:
                seen.append(state)
        return seen


async def run(
    home: Path, steps: list[SetupStep], reports: Reports | None = None
) -> list[SetupItem]:
    return await SetupRun(home, steps, reports or Reports(), environment(home)).run()


async def test_steps_run_in_order_with_their_files_and_statuses(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    reports = Reports()
    steps = [
        step(
            "greet",
            'echo "hello from $(pwd) as HOME=$HOME"; cat .config/greet/text >> order',
            files={".config/greet/text": "first\n"},
        ),
        step("one-off 1", "echo second >> order; cat; echo stdin-was-empty", kind="one-off"),
    ]
    items = await run(home, steps, reports)
    assert [i.state for i in items] == ["installed", "installed"]
    assert (home / "order").read_text() == "first\nsecond\n"
    assert items[0].detail.startswith("install script finished in ")
    assert items[1].detail.startswith("command finished in ")
    assert f"hello from {home} as HOME={home}" in items[0].log
    assert "stdin-was-empty" in items[1].log
    assert items[0].log_path == str(home / STATE_DIR / "feature-greet.log")
    assert items[1].log_path == str(home / STATE_DIR / "one-off-1.log")
    assert items[0].started_at is not None and items[0].finished_at is not None
    # All pending first, then each step installing and installed in turn.
    first = reports.bodies[0].setup
    assert first is not None and {i.state for i in first} == {SetupState.PENDING}
    assert reports.states("greet") == ["pending", "installing", "installed"]
    assert reports.states("one-off 1") == ["pending", "installing", "installed"]
    wire = report_body("e-test", setup=items)
    assert wire["environmentId"] == "e-test"
    assert AgentReport.model_validate(wire).wire()["setup"] == wire["setup"]


async def test_a_failure_is_reported_with_its_log_and_the_next_step_runs(tmp_path: Path):
    reports = Reports()
    items = await run(
        tmp_path,
        [
            step("broken", "echo 'fetching the thing'; echo 'no thing here' >&2; exit 3"),
            step("fine", "echo ok > fine"),
        ],
        reports,
    )
    broken, fine = items
    assert broken.state == "failed"
    assert broken.detail.startswith("install script exited with status 3 after ")
    assert broken.log == "fetching the thing\nno thing here\n"
    assert fine.state == "installed"
    assert (tmp_path / "fine").read_text() == "ok\n"
    # Not marked done: the next pass tries the failed step again, and only that one.
    again = await run(tmp_path, [step("broken", "echo fixed"), step("fine", "x")])
    assert again[0].state == "installed"


async def test_an_installed_step_is_not_run_again_until_its_digest_changes(tmp_path: Path):
    counting = step("count", "echo run >> runs", digest="v1")
    for _ in range(3):
        (item,) = await run(tmp_path, [counting])
        assert item.state == "installed"
    assert (tmp_path / "runs").read_text() == "run\n"
    assert item.detail == "already installed; not run again"
    changed = step("count", "echo run >> runs", digest="v2")
    (item,) = await run(tmp_path, [changed])
    assert item.detail.startswith("install script finished")
    assert (tmp_path / "runs").read_text() == "run\nrun\n"


async def test_a_step_past_its_deadline_is_stopped_with_what_it_started(tmp_path: Path):
    script = "sleep 300 & echo $! > child; echo started; wait"
    (item,) = await run(tmp_path, [step("slow", script, timeout=0.5)])
    assert item.state == "failed"
    assert item.detail == "install script did not finish within 0.5 s and was stopped"
    assert item.log == "started\n"
    child = int((tmp_path / "child").read_text())
    await wait_gone(child)
    assert not (tmp_path / STATE_DIR / "feature-slow.done").exists()


async def test_cancelling_a_run_stops_its_script(tmp_path: Path):
    reports = Reports()
    setup = SetupRun(
        tmp_path, [step("long", "echo $$ > pid; sleep 300")], reports, environment(tmp_path)
    )
    task = asyncio.create_task(setup.run())
    pid_file = tmp_path / "pid"
    await until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_gone(int(pid_file.read_text()))


@pytest.mark.parametrize("path", ["../outside", "/etc/passwd-leeward", "a/../../outside", ""])
async def test_files_outside_the_home_are_refused(tmp_path: Path, path: str):
    home = tmp_path / "home"
    home.mkdir()
    (item,) = await run(home, [step("escape", "echo ran > ran", files={path: "x"})])
    assert item.state == "failed"
    assert item.detail.startswith(f"cannot write {path}: ")
    assert not (home / "ran").exists(), "the script does not run when its files cannot be written"
    assert not (tmp_path / "outside").exists()


async def test_a_symbolic_link_does_not_lead_files_out_of_the_home(tmp_path: Path):
    home, outside = tmp_path / "home", tmp_path / "outside"
    home.mkdir()
    outside.mkdir()
    (home / ".config").symlink_to(outside)
    (item,) = await run(home, [step("sneaky", "true", files={".config/app/x": "x"})])
    assert item.state == "failed"
    assert "outside the home" in item.detail
    assert list(outside.iterdir()) == []
    # A symbolic link as the file itself is replaced, not written through.
    (home / "target").symlink_to(outside / "victim")
    (item,) = await run(home, [step("link", "true", files={"target": "mine\n"})])
    assert item.state == "installed"
    assert (home / "target").read_text() == "mine\n" and not (home / "target").is_symlink()
    assert not (outside / "victim").exists()


async def test_the_log_tail_is_at_most_4_kib_of_whole_characters(tmp_path: Path):
    script = 'for i in $(seq 2000); do echo "line $i é€"; done; echo last-line; exit 1'
    (item,) = await run(tmp_path, [step("noisy", script)])
    assert item.state == "failed"
    assert len(item.log.encode()) <= LOG_TAIL_BYTES
    assert item.log.endswith("last-line\n")
    assert "\ufffd" not in item.log
    assert item.log_path is not None
    assert os.path.getsize(item.log_path) > LOG_TAIL_BYTES
    assert log_tail(tmp_path / "missing.log") == ""


async def test_a_running_step_reports_its_log_as_it_goes(tmp_path: Path):
    reports = Reports()
    flag = tmp_path / "go"
    script = f"echo halfway; while [ ! -e {flag} ]; do sleep 0.05; done; echo done"
    setup = SetupRun(
        tmp_path, [step("progress", script)], reports, environment(tmp_path), progress_seconds=0.1
    )
    task = asyncio.create_task(setup.run())

    def saw_progress() -> bool:
        return any(
            i.state == "installing" and i.log == "halfway\n"
            for body in reports.bodies
            for i in body.setup or []
        )

    await until(saw_progress)
    flag.touch()
    (item,) = await task
    assert item.state == "installed" and item.log == "halfway\ndone\n"


def test_steps_from_the_wire_are_checked():
    good = SetupStep(kind="one-off", name="one-off 2", script="true", digest="d", timeout_seconds=5)

    def profile_with(raw_step: object) -> AgentProfile:
        """As the agent reads its steps: in the environment's profile."""
        wire = {"owner": "alice", "profile": None, "tracked": [], "debounceSeconds": 1.0}
        return parse(AgentProfile, {**wire, "setup": [raw_step]})

    (parsed,) = checked(profile_with(good.wire()).setup)
    assert parsed == good
    assert slug(parsed) == "one-off-2"
    assert slug(profile_with({**good.wire(), "kind": "feature", "name": "Git Stuff"}).setup[0]) == (
        "feature-git-stuff"
    )
    with pytest.raises(StepError, match="timeoutSeconds"):
        checked(profile_with({**good.wire(), "timeoutSeconds": 0}).setup)
    with pytest.raises(FleetError, match="script"):
        profile_with({**good.wire(), "script": None})
    with pytest.raises(FleetError, match="files"):
        profile_with({**good.wire(), "files": {"a": 1}})


async def test_the_reporter_retries_and_sends_the_latest():
    sent: list[list[SetupItem]] = []
    failures = [RuntimeError("fleet down")]

    async def send(items: list[SetupItem]) -> None:
        if failures:
            raise failures.pop()
        sent.append(items)

    reporter = Reporter(send)
    await reporter([SetupItem(kind="feature", name="a", state="pending")])
    await reporter([SetupItem(kind="feature", name="a", state="installing")])
    await asyncio.wait_for(reporter.flush(), 10)
    assert [i.wire() for i in sent[-1]] == [
        SetupItem(kind="feature", name="a", state="installing").wire()
    ]
    assert len(sent) == 1, "the stale report was replaced, not sent after the newer one"
    await reporter.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def wait_gone(pid: int) -> None:
    await until(lambda: not _alive(pid))
