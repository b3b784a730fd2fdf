"""How the CLI fails: one sentence that says what went wrong and what to do, and an exit code;
the traceback too with `--debug` (and always for a server, whose log should say where)."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

_tracebacks = bool(os.environ.get("LEEWARD_DEBUG"))


class CliError(Exception):
    """A failure the user can act on. `str(error)` is the sentence shown; no traceback.
    `details` (e.g. the last lines of a log) are printed under it as they are."""

    def __init__(self, message: str, *, details: str = "", exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.exit_code = exit_code


def one_sentence(message: str) -> str:
    """Trim a message to one line that ends like a sentence."""
    text = " ".join(message.split())
    if text and text[-1] not in ".!?`":
        text += "."
    return text


def format_error(message: str, details: str = "") -> str:
    text = f"Error: {one_sentence(message)}"
    return f"{text}\n{details.rstrip()}" if details.strip() else text


def show_tracebacks() -> None:
    """From now on, a failure prints its traceback above its sentence."""
    global _tracebacks
    _tracebacks = True


def fail(exc: BaseException, message: str, code: int, details: str = "") -> NoReturn:
    """End the command: the traceback if asked for, the sentence on stderr, the exit code."""
    if _tracebacks:
        import traceback

        traceback.print_exception(exc)
    print(format_error(message, details), file=sys.stderr)
    sys.exit(code)
