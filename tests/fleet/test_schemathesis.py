"""schemathesis against the live fleet, as a user, an admin and an agent: every check
(`--checks all`: no 5xx, statuses, content types and bodies as documented, schema-valid input
taken, schema-violating input refused, auth not ignored, `Allow` on 405...). The exceptions,
each with its reason, are in `schemathesis.toml` beside this file.

The fleet is real, with real agents. Each run has a real environment of its own (a run may
migrate or delete it): the agent run uses its agent's token, the user and admin runs name it
where a route takes one. scripts/test runs a
short, seeded form; scripts/chaos (LEEWARD_FULL) a long one with the stateful phase, and
`LEEWARD_SCHEMATHESIS_SEED` picks another seed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from leeward.agent.config import AgentConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CONFIG = Path(__file__).with_name("schemathesis.toml")
ST = Path(sys.executable).with_name("st")
FULL = bool(os.environ.get("LEEWARD_FULL"))
SEED = os.environ.get("LEEWARD_SCHEMATHESIS_SEED", "20261201")
ROLES = ("agent", "admin", "user")


async def schemathesis(url: str, token: str, env_name: str, env_id: str, out: Path) -> str:
    """One `st run` against the fleet's own document; its report when it fails, else ""."""
    args = [
        str(ST),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{url}/v1/openapi.json",
        "--checks",
        "all",
        "--seed",
        SEED,
        "--max-examples",
        "60" if FULL else "5",
        "--phases",
        "examples,coverage,fuzzing,stateful" if FULL else "examples,coverage,fuzzing",
        "--header",
        f"Authorization: Bearer {token}",
        "--report",
        "junit",
        "--report-dir",
        str(out),
    ]
    out.mkdir(parents=True)
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "LEEWARD_ST_REF": env_name, "LEEWARD_ST_ENVIRONMENT": env_id},
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=1800 if FULL else 600)
    text = output.decode(errors="replace")
    (out / "output.txt").write_text(text)
    if process.returncode == 0:
        return ""
    start = max(text.find("= FAILURES ="), 0)
    return text[start : start + 12000]


async def test_the_api_does_what_its_document_says(
    start_fleet, config_factory, sqlite_url, tmp_path
):
    config = config_factory(sqlite_url)
    config.profile_store.wait_seconds = 0.2  # the agent's long poll: answered at once here
    async with start_fleet(config) as f:
        # Each run its own real environment of alice's (a run may migrate or delete it).
        envs = {}
        for role in ROLES:
            status, env = await f.api.call(
                "POST",
                "/v1/environments",
                {"kind": "devserver", "flavor": "tiny", "name": f"probe-{role}"},
            )
            assert status in (201, 202), env
            envs[role] = await f.api.wait_state(env["id"], {"running"})
        agent_env = envs["agent"]["id"]
        agent = AgentConfig.load(config.provider.data_dir / agent_env / "agent.json")
        tokens = {"agent": agent.agent_token, "admin": f.admin.token, "user": f.api.token}
        # The three runs at once: each has its own environment, and the machine's cores.
        runs = []
        for role in ROLES:
            token = tokens[role]
            assert token is not None
            env = envs[role]
            runs.append(schemathesis(f.url, token, env["name"], env["id"], tmp_path / role))
        for role, failures in zip(ROLES, await asyncio.gather(*runs), strict=True):
            assert not failures, f"schemathesis as {role}:\n{failures}"
