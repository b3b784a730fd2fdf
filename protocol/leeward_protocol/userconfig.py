"""`~/.config/leeward/config.toml`: what the engineer wants in every new environment.

Keys are TOML's snake_case. `protocol/schema/UserConfig.json` (from `scripts/gen-protocol`)
gives editors completion; the daemon validates the file on every change and shows problems on
their line. Example:

    default_region = "north"
    default_flavor = "small"
    features = ["docker", "spellcheck"]
    tracked_paths = [".bashrc", ".gitconfig", ".config/nvim"]

    [dotfiles]
    git = "https://git.example.com/ada/dotfiles.git"

    [backup]
    exclude = ["*.log", "/datasets"]

    [announcements]
    ssh_banner = false

    [[one_offs]]
    run = "git config --global pull.rebase true"

    [[one_offs]]
    install = "ripgrep"
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from leeward_protocol.fleet import Name


def check_home_path(value: str) -> str:
    """A path relative to the home: no `..`, not absolute, `/`-separated, no empty parts."""
    if not value or value.startswith(("/", "~")) or any(c in value for c in "\\\x00\r\n"):
        raise ValueError(f"{value!r} must be relative to the home, like `.config/nvim`")
    parts = value.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{value!r} must stay inside the home: no `..`, `.` or empty parts")
    return value.rstrip("/")


HOME_PATH_PATTERN = r"^(?![/~])(?![^\x00]*(?:^|/)\.{1,2}(?:/|$))(?![^\x00]*//+[^/])[^\x00\\\r\n]+$"
"""`check_home_path` as a JSON Schema pattern; a test holds the two to agreeing."""

HomePath = Annotated[
    str, AfterValidator(check_home_path), Field(json_schema_extra={"pattern": HOME_PATH_PATTERN})
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


EXACTLY_ONE = "x-exactly-one"
"""The JSON Schema keyword of a model that takes exactly one of its fields (given, not null).
The fleet's OpenAPI document says it as a `oneOf` (`leeward.fleet.api.openapi`); the schema in
protocol/schema/ keeps the mark, which the TypeScript generator passes over."""


def exactly_one(*fields: str) -> ConfigDict:
    """A model that takes exactly one of `fields`, marked in its JSON Schema (`EXACTLY_ONE`)."""
    return ConfigDict(extra="forbid", json_schema_extra={EXACTLY_ONE: list(fields)})


class OneOff(_Strict):
    """One thing done once in every new environment: a shell command, or a package."""

    model_config = exactly_one("run", "install")

    run: str | None = Field(default=None, min_length=1, description="A shell command.")
    install: str | None = Field(
        default=None, min_length=1, description="A package to install (the system's name)."
    )

    @model_validator(mode="after")
    def _one(self) -> OneOff:
        if (self.run is None) == (self.install is None):
            raise ValueError("give exactly one of `run` or `install`")
        return self


class Dotfiles(_Strict):
    """Where the engineer's dotfiles are: a directory on this machine, or a git repository."""

    model_config = exactly_one("path", "git")

    path: str | None = Field(default=None, min_length=1, description="A local directory.")
    git: str | None = Field(default=None, min_length=1, description="A git URL.")

    @model_validator(mode="after")
    def _one(self) -> Dotfiles:
        if (self.path is None) == (self.git is None):
            raise ValueError("give exactly one of `path` or `git`")
        return self


def check_backup_pattern(value: str) -> str:
    """An exclude pattern a backup can carry: one line, not blank at its ends, no `..`."""
    body = value.removeprefix("!")
    if len(value) > 256:
        raise ValueError(f"{value[:40]!r}…: a pattern is at most 256 characters")
    if not body or body != body.strip() or any(c in value for c in "\n\r\x00"):
        raise ValueError(f"{value!r}: give one pattern per entry, without spaces at its ends")
    if ".." in body.split("/"):
        raise ValueError(f"{value!r}: `..` would leave the home")
    return value


BackupPattern = Annotated[
    str,
    AfterValidator(check_backup_pattern),
    Field(
        description="A restic pattern: a name anywhere (`*.log`), a path from the home "
        "(`/data/raw`), or `!` before one to keep what another leaves out.",
        json_schema_extra={"pattern": r"^[^\x00\r\n]{1,256}$"},
    ),
]


class BackupSettings(_Strict):
    """What of the home its backups leave out, besides caches and build outputs."""

    exclude: list[BackupPattern] = Field(default_factory=list, max_length=200)


class AnnouncementSettings(_Strict):
    """Where the fleet's announcements reach you, besides the editor and the CLI."""

    ssh_banner: bool = Field(
        default=True,
        description="Print the announcements concerning an environment when you log in to it "
        "over SSH (as a motd); `~/.hushlogin` in its home turns it off too.",
    )


class UserConfig(_Strict):
    default_region: Name | None = Field(
        default=None, description="Where new environments go; default: the nearest region."
    )
    default_flavor: Name | None = Field(default=None, description="The devserver flavor.")
    default_profile: Name | None = Field(default=None, description="The container profile.")
    features: list[Name] = Field(
        default_factory=list, description="Features from the fleet's catalog, installed in each."
    )
    one_offs: list[OneOff] = Field(default_factory=list)
    dotfiles: Dotfiles | None = None
    tracked_paths: list[HomePath] = Field(
        default_factory=list,
        description="Paths under the home (besides the defaults) kept in the profile.",
    )
    allow_secrets: list[HomePath] = Field(
        default_factory=list,
        description="Files (glob patterns under the home) stored even though they look like "
        "private keys or tokens. Everything else that looks like one is refused.",
    )
    backup: BackupSettings = Field(default_factory=BackupSettings)
    announcements: AnnouncementSettings = Field(default_factory=AnnouncementSettings)
    allow_binary: list[HomePath] = Field(
        default_factory=list,
        description="Files (glob patterns under the home) stored even though they are not text.",
    )
