"""The user's `config.toml`, as the daemon keeps it: read on every change (watchdog), validated
with `leeward_protocol.userconfig.UserConfig`, each problem placed on its line and column so the
editor can show it in the Problems panel. A file with a problem changes nothing: the last valid
version stays in force.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from leeward.common.validation import faults
from leeward.daemon.watch import DirectoryWatch
from leeward_protocol.userconfig import UserConfig

log = logging.getLogger(__name__)

_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")
_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\s\"]+?)\s*\]\]?\s*(#.*)?$")


@dataclass(frozen=True)
class Problem:
    line: int
    """1-based."""
    column: int
    """1-based."""
    length: int
    message: str


def read_config(text: str) -> tuple[UserConfig | None, list[Problem]]:
    """The config, or None and what is wrong, each problem where it is in `text`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = _TOML_AT.search(str(exc))
        line, column = (int(where.group(1)), int(where.group(2))) if where else (1, 1)
        message = _TOML_AT.sub("", str(exc)).strip()
        return None, [Problem(line, column, 1, f"Not valid TOML: {message}.")]
    try:
        return UserConfig.model_validate(raw), []
    except ValidationError as exc:
        problems = []
        for fault in faults(exc):
            line, column, length = locate(text, fault.loc)
            if fault.kind == "extra_forbidden":
                fault = replace(
                    fault, reason="unknown key; see the schema (protocol/schema/UserConfig.json)"
                )
            problems.append(Problem(line, column, length, fault.sentence("(the file)")))
        return None, problems


def field_location(field: str) -> tuple[str | int, ...]:
    """A field the fleet names (`one_offs.0.run`) as pydantic locates it: indexes are ASCII
    digits only (`str.isdigit` takes '²', which `int()` then refuses)."""
    return tuple(int(p) if p.isascii() and p.isdigit() else p for p in field.split(".") if p)


def locate(text: str, loc: tuple[Any, ...]) -> tuple[int, int, int]:
    """Line, column and length of the key that `loc` (pydantic's error location) names: the
    key's assignment in its table, found by walking the table headers (`[a]`, `[[a]]` with
    their array indexes). Falls back to the closest enclosing key, then line 1."""
    keys = [p for p in loc if isinstance(p, str)]
    lines = text.splitlines()
    best = (1, 1, 1)
    table: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        header = _HEADER.match(line)
        if header is not None:
            name = header.group(2).replace('"', "").replace(" ", "")
            table = name.split(".")
            if header.group(1) == "[[":
                seen[name] = seen.get(name, -1) + 1
            if _wanted(table, loc, seen.get(name)) and table == keys[: len(table)]:
                start = line.index(table[0])
                best = (number, start + 1, len(name))
            continue
        match = re.match(r"^\s*([A-Za-z0-9_\-]+)\s*=", line)
        if match is None:
            continue
        key = match.group(1)
        path = [*table, key]
        if path == keys[: len(path)] and _wanted(table, loc, seen.get(".".join(table))):
            best = (number, match.start(1) + 1, len(key))
            if len(path) == len(keys):
                return best
    return best


def _wanted(table: list[str], loc: tuple[Any, ...], index: int | None) -> bool:
    """Whether this occurrence of an array-of-tables header is the one `loc` indexes."""
    if index is None or not table:
        return True
    position = next((i for i, p in enumerate(loc) if p == table[-1]), None)
    if position is None or position + 1 >= len(loc) or not isinstance(loc[position + 1], int):
        return True
    return bool(loc[position + 1] == index)


class ConfigWatcher:
    """Keeps `current` (the last valid config) and calls `on_problems(path, problems)` after
    every change, with an empty list once the file is valid (or gone) again."""

    def __init__(
        self,
        path: Path,
        on_problems: Callable[[Path, list[Problem]], None],
        on_valid: Callable[[UserConfig, str], None] | None = None,
    ) -> None:
        self.path = path
        self.on_problems = on_problems
        self.on_valid = on_valid
        """Called with each new valid version of the file (and its text) that exists."""
        self.current = UserConfig()
        self.problems: list[Problem] = []
        self._last_text: str | None = None
        # Editors write a file in several steps: read it once they are done.
        self._watch = DirectoryWatch(
            path.parent, lambda changed: changed == str(path), self.reload, settle=0.05
        )

    def start(self) -> None:
        self._watch.start()

    def reload(self) -> None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            log.warning("cannot read %s: %s", self.path, exc)
            return
        if text == self._last_text:
            return
        self._last_text = text
        config, problems = read_config(text)
        if config is not None:
            self.current = config
            log.info("%s is valid: in force", self.path)
        else:
            log.warning(
                "%s has %d problem(s); the last valid version stays", self.path, len(problems)
            )
        self.problems = problems
        self.on_problems(self.path, problems)
        if config is not None and text and self.on_valid is not None:
            self.on_valid(config, text)

    def stop(self) -> None:
        self._watch.stop()
