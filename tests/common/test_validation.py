"""The sentence made from a pydantic error: the field at fault in the input's own words, and
what is wrong with it, however pydantic words or locates it."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from leeward.common.validation import faults, first_fault, sentence
from leeward_protocol.fleet import CreateEnvironment


class Wrapped(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request: CreateEnvironment
    hours: int | None = None

    @model_validator(mode="after")
    def bounded(self) -> Wrapped:
        if self.hours is not None and self.hours > 720:
            raise ValueError("hours: at most 720")
        return self


def error(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        Wrapped.model_validate(data)
    return info.value


@pytest.mark.parametrize(
    ("data", "field", "said"),
    [
        # The union's tag is what is wrong, under the field that holds the union.
        ({"request": {"kind": "spaceship"}}, "request.kind", "request.kind: must be 'devserver'"),
        # Inside the union, the tag is left out of the location.
        ({"request": {"kind": "devserver"}}, "request.flavor", "request.flavor: required."),
        (
            {"request": {"kind": "container", "profile": "web", "colour": "red"}},
            "request.colour",
            "request.colour: unknown field; remove it.",
        ),
        # A check on the whole model that names its field, without pydantic's prefix.
        (
            {"request": {"kind": "container", "profile": "web"}, "hours": 800},
            "hours",
            "hours: at most 720.",
        ),
        ([1, 2, 3], None, "body: must be a JSON object."),
    ],
)
def test_the_field_and_the_reason(data: object, field: str | None, said: str) -> None:
    exc = error(data)
    assert first_fault(exc).field == field
    assert sentence(exc, "body").startswith(said)
    assert "Value error" not in sentence(exc, "body")


def test_every_fault_keeps_pydantics_location_for_whoever_places_it() -> None:
    found = faults(error({"request": {"kind": "devserver"}, "extra": 1}))
    assert {f.field for f in found} == {"request.flavor", "extra"}
    assert ("request", "devserver", "flavor") in {f.loc for f in found}
