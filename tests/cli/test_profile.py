"""`leeward profile show|history|restore`, the real console script against a real fleet."""

from __future__ import annotations

import asyncio
import base64
import json

from leeward.client.credentials import Credentials, store_credentials
from tests.cli.sandbox import make_sandbox
from tests.conftest import small_config


def upload(path: str, text: str) -> dict[str, object]:
    content = base64.b64encode(text.encode()).decode()
    return {"files": [{"path": path, "content": content, "modifiedAt": "2026-11-28T12:00:00Z"}]}


async def test_show_history_restore(tmp_path, start_fleet):
    (tmp_path / "user").mkdir()
    sandbox = make_sandbox(tmp_path / "user")
    config = small_config(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}")
    async with start_fleet(config) as f:
        store_credentials(sandbox.paths.credentials, Credentials(fleet=f.url, token=f.api.token))

        async def leeward(*args: str, check: bool = True) -> str:
            result = await asyncio.to_thread(sandbox.run, *args, check=check)
            return result.stdout if check else result.stdout + result.stderr

        assert "profile is empty" in await leeward("profile", "show")
        for text in ("export A=1\n", "export A=2\n"):
            status, body = await f.api.call("POST", "/v1/profile/files", upload(".bashrc", text))
            assert status == 200, body
        await f.api.call("PUT", "/v1/profile/config", {"features": [], "default_region": "north"})

        shown = await leeward("profile", "show")
        assert "version 3" in shown and ".bashrc" in shown and "region north" in shown
        assert await leeward("profile", "show", ".bashrc") == "export A=2\n"
        assert await leeward("profile", "show", "~/.bashrc", "--version", "1") == "export A=1\n"

        history = await leeward("profile", "history")
        lines = [line.split() for line in history.splitlines() if line.strip()[:1].isdigit()]
        assert [row[0] for row in lines] == ["3", "2", "1"]
        assert ".bashrc changed (from cli)" in history
        only = await leeward("profile", "history", ".bashrc", "--json")
        assert [v["version"] for v in json.loads(only)["versions"]] == [2, 1]

        restored = await leeward("profile", "restore", "1", ".bashrc")
        assert "now at version 4" in restored
        assert await leeward("profile", "show", ".bashrc") == "export A=1\n"

        gone = await leeward("profile", "show", ".bashrc", "--version", "99", check=False)
        assert "not in version 99" in gone
        escape = await leeward("profile", "show", "../../etc/passwd", check=False)
        assert "inside the home" in escape
        missing = await leeward("profile", "restore", "42", check=False)
        assert "not kept" in missing
