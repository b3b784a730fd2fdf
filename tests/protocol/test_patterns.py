"""The JSON Schema patterns the API documents agree with the checks the fleet makes: a string
the document allows is taken, and one it refuses is refused (schemathesis holds the fleet to
both). Hypothesis draws strings near the edges: slashes, dots, whitespace, control characters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from leeward.common.profilefiles import check_path
from leeward_protocol.profile import MAX_PROFILE_PATH, PROFILE_PATH_PATTERN
from leeward_protocol.userconfig import HOME_PATH_PATTERN, UserConfig

PIECES = [
    "a",
    "b",
    ".",
    "/",
    "~",
    "\\",
    " ",
    "\t",
    "\n",
    "\x00",
    "\x1f",
    "\u3000",
    "\x85",
    "\x1c",
    "é",
    ".leeward-conflict-",
    ".local/state/leeward",
]
EDGY = st.lists(st.sampled_from(PIECES), max_size=10).map("".join) | st.text(max_size=12)
EXAMPLES = [
    "a",
    "a/",
    "a//",
    "a//b",
    " ",
    "",
    " /a",
    "./",
    "a/./",
    "a/. /b",
    "~x",
    "a\\b",
    ".config/nvim ",
    "a// ",
    "a// b",
    "..",
    ".x",
    ".local/state/leeward/x",
    "f.leeward-conflict-e-1",
    "\x1c",
]


def _home_path_taken(value: str) -> bool:
    try:
        UserConfig(tracked_paths=[value])
    except ValidationError:
        return False
    return True


@settings(max_examples=400)
@given(EDGY)
def test_home_path_pattern_is_the_check(value):
    assert bool(re.fullmatch(HOME_PATH_PATTERN, value)) == _home_path_taken(value), repr(value)


def test_home_path_pattern_on_the_known_edges():
    for value in EXAMPLES:
        assert bool(re.fullmatch(HOME_PATH_PATTERN, value)) == _home_path_taken(value), value


@settings(max_examples=400)
@given(EDGY | st.from_regex(PROFILE_PATH_PATTERN, fullmatch=True))
def test_profile_path_pattern_is_the_check(value):
    if len(value) > MAX_PROFILE_PATH:
        return
    matches = bool(re.fullmatch(PROFILE_PATH_PATTERN, value))
    assert matches == (check_path(value) is None), repr(value)


def test_profile_path_pattern_on_the_known_edges():
    for value in EXAMPLES:
        matches = bool(re.fullmatch(PROFILE_PATH_PATTERN, value))
        assert matches == (check_path(value) is None), value


def test_backup_excludes_are_what_a_backup_can_carry():
    """config.toml's `[backup] exclude`: refused here what the backup engine would refuse
    (leeward.providers.restic_run.exclude_line), so that one bad entry never fails backups."""
    from leeward.providers.restic_run import exclude_line

    good = ["*.log", "/datasets", "build/out", "!node_modules", "a b"]
    assert UserConfig.model_validate({"backup": {"exclude": good}}).backup.exclude == good
    for pattern in good:
        exclude_line(Path("/srv/e/home"), pattern)
    for bad in [" a", "a ", "!", "../x", "a/../b", "!..", "a\nb"]:
        with pytest.raises(ValidationError):
            UserConfig.model_validate({"backup": {"exclude": [bad]}})
        with pytest.raises(ValueError, match="exclude pattern"):
            exclude_line(Path("/srv/e/home"), bad)
