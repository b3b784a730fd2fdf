"""How the CLI fails: one sentence, non-zero, no traceback (the real `leeward` process, and the
sentence itself)."""

from __future__ import annotations

import subprocess

import pytest

from leeward.cli.errors import format_error, one_sentence
from leeward.client.credentials import Credentials, store_credentials
from tests.conftest import free_port

from .sandbox import Sandbox


def assert_one_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    "args",
    [("list",), ("whoami",), ("catalog",), ("show", "demo"), ("config-ssh", "--no-include")],
)
def test_not_signed_in(sandbox: Sandbox, args: tuple[str, ...]) -> None:
    result = sandbox.run(*args)
    assert_one_error(result, "Not signed in: run `leeward login` or `leeward up`.")


def test_unreachable_fleet(sandbox: Sandbox) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    store_credentials(sandbox.paths.credentials, Credentials(fleet=url, token="t"))
    result = sandbox.run("list")
    assert_one_error(result, f"Cannot reach the fleet at {url}: is it running?")


def test_login_to_an_unreachable_fleet_stores_nothing(sandbox: Sandbox) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = sandbox.run("login", "--fleet", url, input="some-token\n")
    assert_one_error(result, f"Cannot reach the fleet at {url}")
    assert not sandbox.paths.credentials.exists()


def test_login_needs_a_token(sandbox: Sandbox) -> None:
    assert_one_error(sandbox.run("login", "--fleet", "http://127.0.0.1:1"), "No token given")


def test_delete_without_a_tty_needs_yes(sandbox: Sandbox) -> None:
    result = sandbox.run("delete", "demo")
    assert_one_error(result, "Refusing to delete demo without confirmation: pass `--yes`")


def test_bad_lifespan_and_name_are_refused_before_any_call(sandbox: Sandbox) -> None:
    store_credentials(sandbox.paths.credentials, Credentials(fleet="http://127.0.0.1:1", token="t"))
    assert_one_error(
        sandbox.run("create", "devserver", "--lifespan", "5x"), "Lifespan '5x' is not understood"
    )
    assert_one_error(sandbox.run("create", "devserver", "--name", "Bad_Name"), "--name: must be")


def test_debug_shows_the_traceback(sandbox: Sandbox) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    store_credentials(sandbox.paths.credentials, Credentials(fleet=url, token="t"))
    result = sandbox.run("--debug", "list")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Cannot reach")


def test_errors_are_one_sentence() -> None:
    assert one_sentence("Cannot reach\n  the fleet") == "Cannot reach the fleet."
    assert one_sentence("Run `leeward up`") == "Run `leeward up`"
    assert format_error("Not signed in: run `leeward login`.") == (
        "Error: Not signed in: run `leeward login`."
    )
