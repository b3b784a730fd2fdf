"""The user's profile in the fleet: the files that follow them from environment to environment,
their `config.toml`, and the features catalog.

A profile is a sequence of versions. Each version is the whole set of files (path relative to
the home, content hash, size, mode, modification time, where it came from) plus the user's
config; a change makes a new version, the last `historyVersions` are kept, and any of them can
be restored (which makes a new version equal to it). Contents are stored once per hash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from leeward_protocol.base import Integral, Params, Request, Resource, Whole
from leeward_protocol.fleet import EnvironmentKind, Refusal, SetupKind
from leeward_protocol.userconfig import UserConfig


class ProfileLimits(Resource):
    max_file_bytes: int = Field(description="The largest file a profile takes.")
    max_files: int = Field(description="The most files in one profile.")
    max_total_bytes: int = Field(description="The most bytes, all files together.")
    history_versions: int = Field(description="How many versions are kept.")


class ProfileFile(Resource):
    path: str = Field(description="Relative to the home, `/`-separated, e.g. `.config/git/ignore`.")
    sha256: str
    size: int
    mode: int = Field(description="Permission bits, e.g. 420 (0o644).")
    modified_at: datetime
    source: str = Field(
        description="Where this content came from: an environment's name, `dotfiles`, `restore`."
    )
    version: int = Field(description="The version that last changed it.")


class Profile(Resource):
    """One version of a user's profile (the latest unless asked otherwise)."""

    user: str
    version: int = Field(description="0: nothing stored yet.")
    created_at: datetime | None = None
    config: UserConfig | None = Field(default=None, description="Their config.toml, validated.")
    files: list[ProfileFile] = Field(default_factory=list)
    limits: ProfileLimits


class ProfileVersion(Resource):
    version: int
    created_at: datetime
    source: str = Field(description="An environment's name, `config.toml`, `dotfiles`, `restore`.")
    summary: str = Field(description="One line: what changed.")
    changed: list[str] = Field(default_factory=list, description="Paths added or changed.")
    removed: list[str] = Field(default_factory=list)
    config_changed: bool = False


class ProfileHistory(Resource):
    user: str
    versions: list[ProfileVersion] = Field(description="Newest first.")


class FileUpload(Request):
    path: str = Field(min_length=1, max_length=4096)
    content: str = Field(description="The bytes, base64.")
    mode: Annotated[int, Integral] = Field(default=0o644, ge=0, le=0o7777)
    modified_at: datetime
    base_sha256: str | None = Field(
        default=None,
        description="The content this one replaces as the uploader last saw it in the profile "
        "(None: new to it). When the profile holds something else, the upload is a conflict.",
    )


class FileRemoval(Request):
    path: str = Field(min_length=1, max_length=4096)
    base_sha256: str | None = None


class ProfileUpload(Request):
    """Files to store in the profile, in one new version. Files that are refused or conflict
    are left out (and reported); the rest are stored."""

    files: list[FileUpload] = Field(default_factory=list)
    removed: list[FileRemoval] = Field(default_factory=list)
    source: Literal["cli", "dotfiles"] | None = Field(
        default=None,
        description="Users: where the files come from (`cli` when absent); "
        "agents leave it out (the environment is the source).",
    )


class UploadConflict(Resource):
    path: str
    sha256: str | None = Field(description="What the profile holds now (None: removed).")
    version: int
    source: str


class UploadResult(Resource):
    version: int = Field(description="The profile's version after the upload.")
    stored: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    refused: list[Refusal] = Field(default_factory=list)
    conflicts: list[UploadConflict] = Field(default_factory=list)


class RestoreProfile(Request):
    version: Whole = Field(ge=1)
    paths: list[str] = Field(
        default_factory=list, description="Only these files; empty: the whole version."
    )


class Feature(Resource):
    """A feature from the fleet's catalog (its install script stays in the fleet config)."""

    name: str
    description: str
    kinds: list[EnvironmentKind]
    files: list[str] = Field(default_factory=list, description="Files it writes into the home.")


class FeatureList(Resource):
    features: list[Feature]


class SetupStep(Resource):
    """What an agent installs at provision: a feature (script and files) or a one-off."""

    kind: SetupKind
    name: str
    script: str = Field(description="bash, run in the home with `set -e`.")
    files: dict[str, str] = Field(default_factory=dict, description="path -> text, written first.")
    digest: str = Field(description="Identifies this exact step: run again only when it changes.")
    timeout_seconds: float


class AgentProfile(Resource):
    """`GET /v1/agent/profile`: what an environment applies, for its owner."""

    owner: str | None
    profile: Profile | None = Field(description="None for a warm container (no owner yet).")
    tracked: list[str] = Field(description="Paths (files or directories) the agent watches.")
    setup: list[SetupStep] = Field(default_factory=list)
    debounce_seconds: float


MAX_BLOBS = 512
"""Hashes in one blob request: 512 of 67 bytes each fit the API's 64 KiB body limit."""

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
"""A SHA-256 digest in lowercase hex."""


class BlobRequest(Request):
    sha256: list[Sha256] = Field(max_length=MAX_BLOBS)


class Blobs(Resource):
    blobs: dict[str, str] = Field(description="sha256 -> content, base64.")


class ProfileWait(Resource):
    version: int = Field(description="The latest version (may equal `after` on a timeout).")


PROFILE_PATH_PATTERN = (
    r"^(?![/~])(?!\.local/state/leeward(?:/|$))(?!(?:.*/)?\.{1,2}(?:/|$))(?!.*//)"
    r"(?!.*\.leeward-conflict-[^/]*$)[^\x00-\x1f\\]*[^\x00-\x1f\\/]$"
)
"""A path a profile can hold, as `leeward.common.profilefiles.check_path` decides (a test holds
them to agreeing): relative to the home, no `.`, `..` or empty parts, no trailing `/`, no
control characters or backslashes, not Leeward's own state, not a conflict copy."""

MAX_PROFILE_PATH = 256
"""Characters in a profile path named in a URL: 256 of at most 4 bytes each are within the
profile's 1024-byte limit."""


class ProfileFilePath(Params):
    path: str = Field(
        max_length=MAX_PROFILE_PATH,
        description="Relative to the home, e.g. `.config/git/ignore`.",
        json_schema_extra={"pattern": PROFILE_PATH_PATTERN},
    )


class ProfileQuery(Params):
    """`GET /v1/profile` and its files."""

    version: Whole | None = Field(
        default=None, description="An older version (see the history); the latest when absent."
    )


class HistoryQuery(Params):
    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PROFILE_PATH,
        description="Only versions that changed it.",
    )
