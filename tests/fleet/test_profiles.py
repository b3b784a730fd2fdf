"""The profile store through the real API: versions, history, restore, limits and refusals, on
SQLite and PostgreSQL. (Agents' sync through it: tests/agent/test_profile_sync.py.)"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from leeward.fleet.errors import NotFound
from leeward.fleet.store.models import ProfileBlobRow
from leeward_protocol.profile import FileUpload, Profile, ProfileUpload, UploadResult
from tests.conftest import Api

NOW = "2026-11-28T12:00:00Z"


def upload(*files: tuple[str, bytes], removed: list[str] | None = None) -> dict[str, Any]:
    return {
        "files": [
            {"path": p, "content": base64.b64encode(d).decode(), "mode": 0o644, "modifiedAt": NOW}
            for p, d in files
        ],
        "removed": [{"path": p} for p in removed or []],
    }


async def profile(api: Api, version: int | None = None) -> Profile:
    status, body = await api.call("GET", "/v1/profile" + (f"?version={version}" if version else ""))
    assert status == 200, body
    return Profile.model_validate(body)


async def post(api: Api, path: str, body: Any) -> tuple[int, Any]:
    """POST JSON of any size (aiohttp warns about large in-memory bodies; a stream it is)."""
    async with api.http.post(
        api.url + path,
        data=io.BytesIO(json.dumps(body).encode()),
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
    ) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None


async def push(api: Api, body: dict[str, Any]) -> UploadResult:
    status, answer = await post(api, "/v1/profile/files", body)
    assert status == 200, answer
    return UploadResult.model_validate(answer)


async def test_versions_history_read_back_and_restore(start_fleet, config_factory, database_url):
    async with start_fleet(config_factory(database_url)) as f:
        empty = await profile(f.api)
        assert (empty.version, empty.files, empty.config) == (0, [], None)
        assert empty.limits.max_files == 1000

        one = await push(f.api, upload((".bashrc", b"export A=1\n"), (".gitconfig", b"[user]\n")))
        assert one.version == 1 and one.stored == [".bashrc", ".gitconfig"]
        two = await push(f.api, upload((".bashrc", b"export A=2\n")))
        assert two.version == 2
        same = await push(f.api, upload((".bashrc", b"export A=2\n")))
        assert same.version == 2 and same.stored == []  # nothing changed: no version

        latest = await profile(f.api)
        bashrc = next(x for x in latest.files if x.path == ".bashrc")
        assert (bashrc.version, bashrc.source, bashrc.size, bashrc.mode) == (2, "cli", 11, 0o644)

        status, text = await f.api.call("GET", "/v1/profile/files/.bashrc?version=1")
        assert (status, text) == (200, "export A=1\n")
        status, text = await f.api.call("GET", "/v1/profile/files/.bashrc")
        assert (status, text) == (200, "export A=2\n")

        status, history = await f.api.call("GET", "/v1/profile/history?path=.gitconfig")
        assert [v["version"] for v in history["versions"]] == [1]
        status, history = await f.api.call("GET", "/v1/profile/history")
        assert [v["version"] for v in history["versions"]] == [2, 1]
        assert history["versions"][0]["summary"] == ".bashrc changed (from cli)"

        status, body = await f.api.call("POST", "/v1/profile/restore", {"version": 1})
        assert status == 200, body
        restored = Profile.model_validate(body)
        assert restored.version == 3
        status, text = await f.api.call("GET", "/v1/profile/files/.bashrc")
        assert text == "export A=1\n"
        assert next(x for x in restored.files if x.path == ".bashrc").source == "restore"

        # Removing a file is a version too; restoring one path brings it back alone.
        await push(f.api, upload(removed=[".gitconfig"]))
        status, body = await f.api.call(
            "POST", "/v1/profile/restore", {"version": 1, "paths": [".gitconfig"]}
        )
        assert status == 200 and [x["path"] for x in body["files"]] == [".bashrc", ".gitconfig"]

        # Another user sees none of it.
        bob = await f.user("bob")
        assert (await profile(bob)).files == []
        status, body = await bob.call("GET", "/v1/profile/files/.bashrc")
        assert (
            status == 404
            and "not in the latest version of bob's profile" in body["error"]["message"]
        )


async def test_history_keeps_n_versions_and_drops_unreferenced_contents(
    start_fleet, config_factory, sqlite_url
):
    config = config_factory(sqlite_url)
    config.profile_store.history_versions = 3
    async with start_fleet(config) as f:
        for n in range(1, 6):
            await push(f.api, upload((".bashrc", f"export N={n}\n".encode())))
        status, history = await f.api.call("GET", "/v1/profile/history")
        assert [v["version"] for v in history["versions"]] == [5, 4, 3]
        status, body = await f.api.call("GET", "/v1/profile?version=1")
        assert status == 404 and "the last 3 are" in body["error"]["message"]
        status, body = await f.api.call("POST", "/v1/profile/restore", {"version": 2})
        assert status == 404
        async with f.fleet.store.read() as session:
            blobs = await session.scalar(select(func.count()).select_from(ProfileBlobRow))
        assert blobs == 3


async def test_hostile_uploads_are_refused_and_the_store_is_unchanged(
    start_fleet, config_factory, database_url, tmp_path: Path
):
    async with start_fleet(config_factory(database_url)) as f:
        base = await push(f.api, upload((".bashrc", b"export A=1\n")))
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True
        )
        key = (tmp_path / "id").read_bytes()
        cases: list[tuple[dict[str, Any], str, str]] = [
            (upload(("../../etc/passwd", b"root:x:0:0\n")), "escapes-home", "inside the home"),
            (upload(("/etc/passwd", b"x\n")), "escapes-home", "inside the home"),
            (upload((".config/../../x", b"x\n")), "escapes-home", "inside the home"),
            (upload((".config/big", b"#" * (1024 * 1024 + 1))), "too-large", "limit of 1 MiB"),
            (upload((".config/blob", os.urandom(2048))), "binary", "allow_binary"),
            (upload((".ssh/id_ed25519", key)), "secret", "a private key"),
            (upload((".npmrc", b"//registry/:_authToken=npm_" + b"x" * 36 + b"\n")), "secret", ""),
            (
                upload(*[(f".config/junk/{i}", b"x\n") for i in range(10_000)]),
                "too-many-files",
                "over its limit of 1000",
            ),
            (upload((".bashrc.leeward-conflict-b-20261128T120000Z", b"x\n")), "bad-content", ""),
        ]
        for body, code, words in cases:
            result = await push(f.api, body)
            assert result.version == base.version, (code, result)
            assert result.stored == []
            assert [r.code for r in result.refused] == [code], result.refused
            assert words in result.refused[0].reason
        after = await profile(f.api)
        assert after.version == base.version and [x.path for x in after.files] == [".bashrc"]

        # One refused file does not hold back the others of the same upload.
        mixed = await push(f.api, upload((".gitconfig", b"[core]\n"), (".config/blob", b"\0\1")))
        assert mixed.stored == [".gitconfig"] and [r.code for r in mixed.refused] == ["binary"]

        # Bodies: not base64, too large for the API, not JSON.
        bad = upload((".x", b"x"))
        bad["files"][0]["content"] = "not base64!"
        assert (await push(f.api, bad)).refused[0].code == "bad-content"
        status, body = await post(
            f.api, "/v1/profile/files", {"files": [], "padding": "x" * (9 * 1024 * 1024)}
        )
        assert status == 413 and "several uploads" in body["error"]["message"]
        status, body = await f.api.call("POST", "/v1/profile/files", data=b"[1,")
        assert status == 400 and "not valid JSON" in body["error"]["message"]
        status, body = await f.api.call("POST", "/v1/profile/files", {"files": [{"path": "x"}]})
        assert status == 422 and "files.0.content" in body["error"]["message"]
        status, body = await f.api.call("GET", "/v1/profile/files/..%2F..%2Fetc%2Fpasswd")
        assert status in (404, 422)
        status, body = await f.api.call("GET", "/v1/profile?version=latest")
        assert status == 422 and body["error"]["field"] == "version"


async def test_secrets_are_stored_when_the_config_allows_them(
    start_fleet, config_factory, sqlite_url
):
    async with start_fleet(config_factory(sqlite_url)) as f:
        token = b"//registry.npmjs.org/:_authToken=npm_" + b"x" * 36 + b"\n"
        assert (await push(f.api, upload((".npmrc", token)))).refused[0].code == "secret"
        status, body = await f.api.call("PUT", "/v1/profile/config", {"allow_secrets": [".npmrc"]})
        assert status == 200, body
        assert (await push(f.api, upload((".npmrc", token)))).stored == [".npmrc"]


async def test_config_is_stored_validated_and_carried_forward(
    start_fleet, config_factory, database_url
):
    async with start_fleet(config_factory(database_url)) as f:
        status, body = await f.api.call(
            "PUT",
            "/v1/profile/config",
            {
                "default_region": "north",
                "one_offs": [{"run": "echo hi"}],
                "tracked_paths": [".vimrc"],
            },
        )
        assert status == 200, body
        first = Profile.model_validate(body)
        assert first.version == 1 and first.config is not None
        assert first.config.default_region == "north"
        status, body = await f.api.call("PUT", "/v1/profile/config", first.config.model_dump())
        assert Profile.model_validate(body).version == 1  # the same config: no new version

        for wrong, field in (
            ({"features": ["no-such-feature"]}, "features"),
            ({"tracked_paths": ["../etc"]}, "tracked_paths.0"),
            ({"default_regoin": "north"}, "default_regoin"),
            ({"one_offs": [{"run": "a", "install": "b"}]}, "one_offs.0"),
        ):
            status, body = await f.api.call("PUT", "/v1/profile/config", wrong)
            assert status == 422, body
            assert body["error"]["field"] == field, body
        latest = await profile(f.api)
        assert latest.version == 1 and latest.config == first.config

        # Files uploaded later keep the config; history says which version changed it.
        await push(f.api, upload((".vimrc", b"set nu\n")))
        latest = await profile(f.api)
        assert latest.version == 2 and latest.config == first.config
        status, history = await f.api.call("GET", "/v1/profile/history")
        assert [v["configChanged"] for v in history["versions"]] == [False, True]


async def test_stale_agent_edits_are_conflicts_and_blobs_stay_per_user(
    start_fleet, config_factory, database_url
):
    """The store's side of a conflict: an upload based on an older content of a file is not
    stored, and the answer says what the profile holds now (the agent keeps both)."""
    async with start_fleet(config_factory(database_url)) as f:
        await f.user("bob")
        store = f.fleet.profiles
        when = datetime.now(UTC)

        def edit(content: bytes, base: str | None) -> ProfileUpload:
            return ProfileUpload(
                files=[
                    FileUpload(
                        path=".bashrc",
                        content=base64.b64encode(content).decode(),
                        modified_at=when,
                        base_sha256=base,
                    )
                ]
            )

        a = await store.upload("alice", edit(b"from a\n", None), "env-a", check_base=True)
        assert a.stored == [".bashrc"]
        sha_a = (await store.profile("alice")).files[0].sha256
        b = await store.upload("alice", edit(b"from b\n", None), "env-b", check_base=True)
        assert b.stored == [] and b.version == a.version
        assert [(c.path, c.sha256, c.source) for c in b.conflicts] == [(".bashrc", sha_a, "env-a")]
        b2 = await store.upload("alice", edit(b"from b\n", sha_a), "env-b", check_base=True)
        assert b2.stored == [".bashrc"] and b2.version == a.version + 1
        _, first = await store.read_file("alice", ".bashrc", a.version)
        assert first == b"from a\n"

        assert await store.blobs("alice", [sha_a]) == {sha_a: b"from a\n"}
        with pytest.raises(NotFound):
            await store.blobs("bob", [sha_a])


async def test_an_agent_reports_many_setup_steps_with_their_logs(
    start_fleet, config_factory, sqlite_url
):
    """A report carries every step's log tail (4 KiB each): far over the API's usual 64 KiB."""
    config = config_factory(sqlite_url)
    async with start_fleet(config) as f:
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny"}
        )
        env = await f.api.wait_state(env["id"], {"running"})
        assert config.provider.data_dir is not None
        agent = json.loads((config.provider.data_dir / env["id"] / "agent.json").read_text())
        items = [
            {"kind": "one-off", "name": f"one-off {i}", "state": "failed", "log": "x" * 4096}
            for i in range(1, 31)
        ]
        body = {"environmentId": env["id"], "setup": items}
        agent_api = Api(f.url, f.api.http, agent["agent_token"])
        status, answer = await post(agent_api, "/v1/agent/report", body)
        assert status == 204, answer
        status, got = await f.api.call("GET", f"/v1/environments/{env['id']}")
        assert len(got["setup"]) == 30 and got["setup"][29]["log"] == "x" * 4096
        status, answer = await post(f.api, "/v1/agent/report", body)  # a user's token
        assert status == 401, answer


async def test_a_held_wait_answers_at_a_write_at_its_deadline_and_at_shutdown(
    start_fleet, config_factory, database_url
):
    async with start_fleet(config_factory(database_url)) as f:
        store = f.fleet.profiles
        held = asyncio.create_task(store.wait("alice", 0, 60.0))
        await push(f.api, upload((".bashrc", b"export A=1\n")))
        assert await asyncio.wait_for(held, 5.0) == 1  # woken by the write, not the minute
        assert await asyncio.wait_for(store.wait("alice", 1, 0.2), 5.0) == 1  # the deadline
        held = asyncio.create_task(store.wait("alice", 1, 60.0))
        store.close()
        assert await asyncio.wait_for(held, 5.0) == 1  # shutdown answers at once
