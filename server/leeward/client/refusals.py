"""Why a search for an environment found nothing (`LocateError`: the whole search) or refused
one address (`NotVerified`). Apart from `leeward.client.locate`, so that `leeward proxy` can
catch them without importing the search (not needed with `--address`)."""

from __future__ import annotations


class LocateError(Exception):
    """No source led to a verified connection; the message says what each one did."""

    def __init__(
        self,
        message: str,
        *,
        impostor: str | None = None,
        fleet_state: str | None = None,
        gone: bool = False,
    ) -> None:
        super().__init__(message)
        self.impostor = impostor
        """The sentence naming who answered instead of the environment, when that is why
        (at the address the fleet stands by, or at any address when the fleet did not say)."""
        self.fleet_state = fleet_state
        """The environment's state as the fleet answered it; None when it did not answer."""
        self.gone = gone
        """The fleet says there is no such environment: looking again cannot find it."""


class NotVerified(Exception):
    """A verifier's refusal: the reason, for the person reading the error."""

    def __init__(self, message: str, *, impostor: bool = False) -> None:
        super().__init__(message)
        self.impostor = impostor
        """Something answered there and proved not to be the environment (an impostor, or an
        address that now belongs to another host), as opposed to nothing answering."""
