"""The signed-in user's fleet URL and token, kept in one TOML file only its owner can read."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


@dataclass(frozen=True)
class Credentials:
    fleet: str
    token: str


class CredentialsError(Exception):
    """The credentials file is missing or unreadable; the message says what to do."""


NOT_SIGNED_IN = "Not signed in: run `leeward login` or `leeward up`."


def load_credentials(path: Path) -> Credentials:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CredentialsError(NOT_SIGNED_IN) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CredentialsError(
            f"Cannot read {path} ({exc}): sign in again with `leeward login`."
        ) from None
    fleet, token = raw.get("fleet"), raw.get("token")
    if not isinstance(fleet, str) or not isinstance(token, str) or not fleet or not token:
        raise CredentialsError(
            f"{path} lacks a fleet or a token: sign in again with `leeward login`."
        )
    return Credentials(fleet=fleet, token=token)


def store_credentials(path: Path, credentials: Credentials) -> None:
    import tomli_w

    text = tomli_w.dumps({"fleet": credentials.fleet, "token": credentials.token})
    write_private(path, text)


def write_private(path: Path, text: str, mode: int = FILE_MODE) -> None:
    """Write `text` to `path` atomically (temp file + rename) with `mode`, in a directory that
    is created 0700 if missing. Readers see the old file or the new one, never half of one."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, DIR_MODE)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed or the file may have existed
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
