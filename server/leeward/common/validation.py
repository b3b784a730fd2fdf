"""The sentence made from a pydantic validation error, for whoever sent the bad input: the field
at fault (dotted, in the input's own words: the wire's camelCase, config.toml's keys) and what
is wrong with it. The fleet's API, the daemon, the CLI and the config loaders all say it so.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

UNION_TAGS = frozenset({"devserver", "container"})
"""Tags of the protocol's discriminated unions: pydantic puts the tag first in a location, but
people know the field (`flavor`), not the tag (`devserver.flavor`)."""

_OBJECT_EXPECTED = frozenset({"model_type", "model_attributes_type", "dict_type"})

_BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("more than", "gt"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("less than", "lt"),
}
"""A number out of its range: said as the bound it crossed."""

_PLAIN = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_parsing_size": "must be a whole number of at most 16 digits",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "datetime_type": "must be a date and time as an RFC 3339 string, like 2026-12-01T09:30:00Z",
}
"""pydantic's words for a wrong type, in the words of the one who sent it."""


@dataclass(frozen=True)
class Fault:
    """One thing wrong with an input."""

    loc: tuple[str | int, ...]
    """Where, as pydantic located it."""
    field: str | None
    """`loc` dotted, union tags left out; None when the fault is in the input as a whole."""
    reason: str
    """What is wrong, without the field: "unknown field; remove it"."""
    kind: str
    """pydantic's error type ("missing", "extra_forbidden", "value_error", ...)."""

    def sentence(self, whole: str = "") -> str:
        """`field: reason.`; `whole` names the input when the fault is in all of it."""
        where = self.field or whole
        if where:
            return f"{where}: {self.reason}."
        return f"{self.reason[:1].upper()}{self.reason[1:]}."


def fault_of(error: ErrorDetails) -> Fault:
    loc = tuple(error["loc"])
    field = ".".join(str(part) for part in loc if part not in UNION_TAGS) or None
    kind = error["type"]
    reason = str(error["msg"]).removeprefix("Value error, ").rstrip(".")
    if kind == "extra_forbidden":
        reason = "unknown field; remove it"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        # Located at the union itself: name its tag, which is what is wrong.
        field = f"{field}.kind" if field else "kind"
        reason = "must be 'devserver' or 'container'"
    elif kind == "missing":
        reason = "required"
    elif kind in _OBJECT_EXPECTED:
        reason = "must be a JSON object"
    elif kind in _PLAIN:
        reason = _PLAIN[kind]
    elif kind in _BOUNDS:
        word, key = _BOUNDS[kind]
        reason = f"must be {word} {error.get('ctx', {}).get(key)}"
    elif field is not None and reason.startswith(f"{field}: "):
        reason = reason[len(field) + 2 :]
    elif field is None and ": " in reason:
        # A check on the whole model names the field it is about ("hours: at most 720").
        field, reason = reason.split(": ", 1)
    return Fault(loc=loc, field=field, reason=reason, kind=kind)


def faults(exc: ValidationError) -> list[Fault]:
    """Every fault, in pydantic's order."""
    return [fault_of(error) for error in exc.errors()]


def first_fault(exc: ValidationError) -> Fault:
    return fault_of(exc.errors()[0])


def sentence(exc: ValidationError, whole: str = "") -> str:
    """The first fault as one sentence (see `Fault.sentence`)."""
    return first_fault(exc).sentence(whole)


M = TypeVar("M", bound=BaseModel)


def load_toml(path: Path, model: type[M], error: type[Exception], *, missing: str = "") -> M:
    """A TOML file read into `model`; `error` with one sentence that names the file and what is
    wrong (no such file, plus `missing`; not TOML; the first field at fault)."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such file{missing}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(f"{path}: {sentence(exc, '(top level)')}") from None
