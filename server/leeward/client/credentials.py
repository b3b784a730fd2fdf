"""The signed-in user's fleet URL and token, kept in one TOML file only its owner can read."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from leeward.common.files import write_private


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
