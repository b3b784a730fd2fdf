"""config.toml: validated, and every problem placed on its own line and column."""

from __future__ import annotations

from typing import Any

from leeward.daemon.userconfig import field_location, read_config

GOOD = """\
default_region = "north"
features = ["docker"]

[dotfiles]
git = "https://git.example.com/ada/dotfiles.git"

[[one_offs]]
run = "git config --global pull.rebase true"

[[one_offs]]
install = "ripgrep"
"""


def test_a_valid_file_is_read():
    config, problems = read_config(GOOD)
    assert problems == []
    assert config is not None
    assert config.default_region == "north" and config.features == ["docker"]
    assert config.dotfiles is not None and config.dotfiles.git
    assert [o.install for o in config.one_offs] == [None, "ripgrep"]
    empty, problems = read_config("")
    assert empty is not None and problems == [] and empty.features == []


def test_each_problem_is_on_its_line():
    text = """\
default_region = "North Pole"
featurs = ["docker"]

[dotfiles]
path = "~/dots"
git = "https://example.com/d.git"

[[one_offs]]
run = "make"

[[one_offs]]
install = ""
"""
    config, problems = read_config(text)
    assert config is None
    found = {(p.line, p.message.split(":")[0]) for p in problems}
    assert (1, "default_region") in found
    assert (2, "featurs") in found
    assert any(p.line == 4 and p.message.startswith("dotfiles") for p in problems), problems
    assert (12, "one_offs.1.install") in found, problems
    unknown = next(p for p in problems if p.line == 2)
    assert unknown.column == 1 and unknown.length == len("featurs")
    assert "unknown key" in unknown.message


def test_broken_toml_says_where():
    broken = 'default_region = "north"\nfeatures = [\n  "docker",\n  5 5\n]\n'
    config, problems = read_config(broken)
    assert config is None
    assert len(problems) == 1 and problems[0].line == 4
    assert problems[0].message.startswith("Not valid TOML")


async def test_the_daemon_shows_problems_on_their_line_and_keeps_the_last_valid_config(
    tmp_path, start_fleet
):
    from lsprotocol import types

    from leeward.client.credentials import Credentials, store_credentials
    from leeward.fleet.config import FeatureConfig
    from tests.cli.sandbox import make_sandbox
    from tests.conftest import small_config, until
    from tests.daemon.kit import running_daemon

    (tmp_path / "user").mkdir()
    sandbox = make_sandbox(tmp_path / "user")
    config_file = sandbox.paths.config_dir / "config.toml"
    config_file.parent.mkdir(parents=True)
    config_file.write_text('default_region = "south"\n')
    fleet_config = small_config(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}")
    fleet_config.features = [FeatureConfig(name="docker", install="true")]
    async with start_fleet(fleet_config) as f:

        async def stored() -> str | None:
            """The default region of the config the fleet holds as the user's profile."""
            profile = await f.fleet.profiles.profile("alice")
            return profile.config.default_region if profile.config else None

        store_credentials(sandbox.paths.credentials, Credentials(fleet=f.url, token=f.api.token))
        async with running_daemon(sandbox, {}) as d:
            await d.poll("leeward/status/get", lambda s: s["fleet"] == "connected")
            catalog = await d.request("leeward/catalog/get", {})
            assert catalog["defaultRegion"] == "south", "config.toml's default region"
            await until(stored, expected="south")  # the valid config is the user's profile
            stored_version = (await f.fleet.profiles.profile("alice")).version

            config_file.write_text('default_region = "north"\nfeatures = ["docker", "Bad Name"]\n')
            uri = config_file.as_uri()
            shown = await d.until(
                lambda: [p for p in d.diagnostics if p.uri == uri and p.diagnostics],
                what="no diagnostics for the broken config",
            )
            problem = shown[-1].diagnostics[0]
            assert problem.range.start.line == 1, "the second line: features"
            assert problem.range.start.character == 0
            assert problem.message.startswith("features.1:")
            assert problem.severity == types.DiagnosticSeverity.Error
            await d.until(
                lambda: any("last valid settings stay" in m.message for m in d.messages),
                what="no warning that the last valid settings stay",
            )
            catalog = await d.request("leeward/catalog/get", {})
            assert catalog["defaultRegion"] == "south", "the last valid version stays in force"
            profile = await f.fleet.profiles.profile("alice")
            assert profile.version == stored_version, "the previous profile stays in force"
            assert profile.config is not None and profile.config.default_region == "south"

            config_file.write_text('default_region = "north"\nfeatures = ["docker"]\n')
            await d.until(
                lambda: d.diagnostics[-1].uri == uri and not d.diagnostics[-1].diagnostics,
                what="the diagnostics were not cleared",
            )
            catalog = await d.request("leeward/catalog/get", {})
            assert catalog["defaultRegion"] == "north"
            await until(stored, expected="north")

            # Valid here, refused by the fleet (its catalog has no such feature): shown on the
            # line too, and the profile keeps the last config the fleet accepted.
            config_file.write_text('default_region = "south"\nfeatures = ["docker", "nope"]\n')
            refused = await d.until(
                lambda: [
                    x
                    for p in d.diagnostics
                    if p.uri == uri
                    for x in p.diagnostics
                    if "catalog" in x.message
                ],
                what="no diagnostic for the fleet's refusal",
            )
            assert refused[-1].range.start.line == 1
            assert "nope not in this fleet's catalog" in refused[-1].message
            assert await stored() == "north"

            # A dotfiles directory goes into the profile's files (what may not, does not).
            dots = tmp_path / "dots"
            (dots / ".config" / "tool").mkdir(parents=True)
            (dots / ".vimrc").write_text("set number\n")
            (dots / ".config" / "tool" / "settings.ini").write_text("[ui]\ndark = yes\n")
            (dots / ".config" / "etc").symlink_to("/etc")
            (dots / ".git").mkdir()
            (dots / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
            config_file.write_text(f'[dotfiles]\npath = "{dots}"\n')

            async def files() -> list[str]:
                return [x.path for x in (await f.fleet.profiles.profile("alice")).files]

            await until(files, expected=[".config/tool/settings.ini", ".vimrc"])
            history = await f.fleet.profiles.history("alice")
            assert history.versions[0].source == "dotfiles"

            # An environment's later edit is newer than the directory's unchanged copy: a new
            # config (or a daemon restart) does not send the directory's copy again.
            edited = upload_one(".vimrc", b"set number relativenumber\n")
            await f.fleet.profiles.upload("alice", edited, "box", check_base=False)
            config_file.write_text(f'default_region = "north"\n[dotfiles]\npath = "{dots}"\n')
            await until(stored, expected="north")
            _, vimrc = await f.fleet.profiles.read_file("alice", ".vimrc")
            assert vimrc == b"set number relativenumber\n"
            (dots / ".vimrc").write_text("set nonumber\n")  # changed in the directory: sent
            config_file.write_text(f'default_region = "south"\n[dotfiles]\npath = "{dots}"\n')

            async def vimrc_now() -> bytes:
                return (await f.fleet.profiles.read_file("alice", ".vimrc"))[1]

            await until(vimrc_now, expected=b"set nonumber\n")


def upload_one(path: str, data: bytes) -> Any:
    import base64
    from datetime import UTC, datetime

    from leeward_protocol.profile import FileUpload, ProfileUpload

    return ProfileUpload(
        files=[
            FileUpload(
                path=path, content=base64.b64encode(data).decode(), modified_at=datetime.now(UTC)
            )
        ]
    )


def test_a_field_the_fleet_names_is_located_with_ascii_indexes_only():
    assert field_location("one_offs.1.run") == ("one_offs", 1, "run")
    # A fleet (or a proxy in front of it) that says "files.²" must not crash the daemon.
    assert field_location("files.².path") == ("files", "²", "path")
    assert field_location("") == ()
