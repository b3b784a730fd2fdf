"""Profile sync end to end: a real fleet, the local provider and real agents. The tests write
into an environment's home directly (`<data_dir>/<id>/home`), as the user editing there would,
and read the profile through the user's API."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import select

from leeward.fleet.config import FleetConfig
from leeward.fleet.store.models import EnvironmentRow
from tests.conftest import Api, small_config, until


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def home_of(config: FleetConfig, env: dict[str, Any]) -> Path:
    assert config.provider.data_dir is not None
    return config.provider.data_dir / env["id"] / "home"


async def create(api: Api, name: str) -> dict[str, Any]:
    status, body = await api.call(
        "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": name}
    )
    assert status == 202, body
    return dict(await api.wait_state(body["id"], {"running"}))


async def profile(api: Api, version: int | None = None) -> dict[str, Any]:
    query = f"?version={version}" if version is not None else ""
    status, body = await api.call("GET", f"/v1/profile{query}")
    assert status == 200, body
    return dict(body)


def files_of(body: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in body["files"]}


async def stored(api: Api, path: str, version: int) -> bytes:
    async with api.http.get(
        f"{api.url}/v1/profile/files/{path}?version={version}",
        headers={"Authorization": f"Bearer {api.token}"},
    ) as response:
        assert response.status == 200, await response.text()
        return await response.read()


async def test_an_edit_is_stored_in_two_seconds_and_new_environments_start_with_it(
    start_fleet, sqlite_url, tmp_path
):
    config = small_config(tmp_path, sqlite_url, regions=1, warm_pool=1, pool_interval_seconds=0.2)
    async with start_fleet(config) as f:
        a = await create(f.api, "box-a")
        bashrc = home_of(config, a) / ".bashrc"
        content = b"export EDITOR=vim\nalias gs='git status'\n"
        loop = asyncio.get_running_loop()
        written = loop.time()
        bashrc.write_bytes(content)

        async def has_it() -> bool:
            return files_of(await profile(f.api)).get(".bashrc") == sha(content)

        await until(has_it, "the edit in the profile", timeout=2.0)
        assert loop.time() - written < 2.0

        b = await create(f.api, "box-b")  # running: its agent applied the profile first
        home_b = home_of(config, b)
        assert (home_b / ".bashrc").read_bytes() == content
        record = (home_b / ".local/state/leeward/sync.json").read_text()
        assert sha(content) in record

        # The sync status reaches the fleet; no file was edited in two places.
        async def reported() -> Any:
            _, env = await f.api.call("GET", f"/v1/environments/{b['id']}")
            sync = env.get("sync")
            return sync if sync and sync["version"] >= 1 else None

        sync = await until(reported, "B's sync status", timeout=10.0)
        assert sync["error"] == ""
        assert sync["conflicts"] == []

        # A warm container syncs nothing; claimed, it has the profile when the claim answers.
        async def warm() -> Any:
            async with f.fleet.store.read() as session:
                rows = await session.execute(
                    select(EnvironmentRow.id).where(EnvironmentRow.state == "warm")
                )
                return list(rows.scalars())

        [warm_id] = await until(warm, "a warm container", timeout=10.0)
        warm_home = home_of(config, {"id": warm_id})
        assert not (warm_home / ".bashrc").exists()
        assert not (warm_home / ".local/state/leeward/sync.json").exists()
        status, c = await f.api.call(
            "POST", "/v1/environments", {"kind": "container", "profile": "web"}
        )
        assert status == 201, c
        assert (c["id"], c["state"]) == (warm_id, "running")
        assert (warm_home / ".bashrc").read_bytes() == content


async def test_the_same_file_edited_in_two_environments_loses_nothing(
    start_fleet, sqlite_url, tmp_path
):
    config = small_config(tmp_path, sqlite_url, regions=1)
    async with start_fleet(config) as f:
        a = await create(f.api, "box-a")
        home_a = home_of(config, a)
        (home_a / ".bashrc").write_bytes(b"# shared\n")

        async def first_stored() -> bool:
            return files_of(await profile(f.api)).get(".bashrc") == sha(b"# shared\n")

        await until(first_stored, "the first version in the profile", timeout=5.0)
        b = await create(f.api, "box-b")
        home_b = home_of(config, b)
        assert (home_b / ".bashrc").read_bytes() == b"# shared\n"
        before = (await profile(f.api))["version"]

        ours = {"box-a": b"# shared\nexport FROM=a\n", "box-b": b"# shared\nexport FROM=b\n"}
        (home_a / ".bashrc").write_bytes(ours["box-a"])
        (home_b / ".bashrc").write_bytes(ours["box-b"])
        homes = {"box-a": home_a, "box-b": home_b}

        async def settled() -> Any:
            body = await profile(f.api)
            final = body["files"] and files_of(body).get(".bashrc")
            copies = {
                name: list(home.glob(".bashrc.leeward-conflict-*")) for name, home in homes.items()
            }
            both_same = all(
                sha((home / ".bashrc").read_bytes()) == final for home in homes.values()
            )
            if final in {sha(v) for v in ours.values()} and any(copies.values()) and both_same:
                return body, copies
            return None

        body, copies = await until(settled, "both edits settled", timeout=15.0)
        winner = next(name for name, v in ours.items() if sha(v) == files_of(body)[".bashrc"])
        other = next(name for name in ours if name != winner)
        # The one whose version is the newest kept theirs as a conflict copy...
        [copy] = copies[winner]
        assert copies[other] == []
        assert copy.read_bytes() == ours[other]
        assert copy.name.startswith(f".bashrc.leeward-conflict-{other}-")
        # ...and the other version is in the profile's history too.
        versions = range(before + 1, body["version"] + 1)
        history = {v: files_of(await profile(f.api, v)).get(".bashrc") for v in versions}
        assert sha(ours[other]) in history.values()
        older = next(v for v, s in history.items() if s == sha(ours[other]))
        assert await stored(f.api, ".bashrc", older) == ours[other]
        assert await stored(f.api, ".bashrc", body["version"]) == ours[winner]

        env_id = (a if winner == "box-a" else b)["id"]

        async def conflict_reported() -> Any:
            _, env = await f.api.call("GET", f"/v1/environments/{env_id}")
            sync = env.get("sync") or {}
            return sync.get("conflicts")

        [conflict] = await until(conflict_reported, "the conflict in the sync status", timeout=10.0)
        assert conflict["path"] == ".bashrc"
        assert conflict["copyPath"] == copy.name
        assert conflict["otherEnvironment"] == other


async def test_hostile_files_are_refused_and_leave_the_profile_alone(
    start_fleet, sqlite_url, tmp_path
):
    config = small_config(tmp_path, sqlite_url, regions=1)
    async with start_fleet(config) as f:
        a = await create(f.api, "box-a")
        home = home_of(config, a)
        (home / ".bashrc").write_bytes(b"# one\n")

        async def first_stored() -> bool:
            return files_of(await profile(f.api)).get(".bashrc") == sha(b"# one\n")

        await until(first_stored, "the first version in the profile", timeout=5.0)
        before = await profile(f.api)

        # Made aside, then moved in at once (like an unpacked archive): an agent that scanned
        # a half-written directory would rightly store its first files, under the limits.
        staging = home / "staging"

        def make() -> None:
            staging.mkdir()
            (staging / "evil").symlink_to("/etc")
            with open(staging / "big", "wb") as big:
                big.truncate(1 << 30)  # sparse: 1 GiB that takes no disk
            (staging / "junk").mkdir()
            for i in range(10_000):
                (staging / "junk" / f"f{i:05}").write_bytes(b"x\n")
            (staging / "blob").write_bytes(os.urandom(4096))
            (staging / "key.pem").write_text(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n"
                "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
                "-----END OPENSSH PRIVATE KEY-----\n"
            )
            staging.rename(home / ".config")

        await asyncio.to_thread(make)  # the fleet shares this event loop
        (home / ".bashrc").write_bytes(b"# two: a legitimate edit\n")
        expected = {
            ".config/evil": "symlink",
            ".config/big": "too-large",
            ".config/junk": "too-many-files",
            ".config/blob": "binary",
            ".config/key.pem": "secret",
        }

        async def refused() -> Any:
            _, env = await f.api.call("GET", f"/v1/environments/{a['id']}")
            got = {r["path"]: r for r in (env.get("sync") or {}).get("refused", [])}
            if not expected.keys() <= got.keys():
                return None
            # Refusals are those of the last scan: wait for one that saw every file written.
            return got if "10000 new files" in got[".config/junk"]["reason"] else None

        got = await until(refused, "the refusals in the sync status", timeout=20.0)
        assert {p: got[p]["code"] for p in expected} == expected
        assert "/etc" in got[".config/evil"]["reason"]
        assert "1 GiB" in got[".config/big"]["reason"]
        assert "private key" in got[".config/key.pem"]["reason"]
        assert "allow_binary" in got[".config/blob"]["reason"]
        assert "10000 new files" in got[".config/junk"]["reason"]

        async def edit_stored() -> Any:
            body = await profile(f.api)
            return (
                body
                if files_of(body).get(".bashrc") == sha(b"# two: a legitimate edit\n")
                else None
            )

        after = await until(edit_stored, "the legitimate edit in the profile", timeout=5.0)
        assert set(files_of(after)) == set(files_of(before)) == {".bashrc"}
        assert after["version"] == before["version"] + 1
