"""Text from others (an operator's announcement) made safe to print on a terminal: the agent's
SSH login banner and the CLI print it through `plain`, so that no escape sequence in it can
move the cursor, set the window's title, or worse."""

from __future__ import annotations

import unicodedata

MAX_LINE_CHARS = 300
"""A line longer than this is cut (with `…`)."""

_UNPRINTABLE = ("Cc", "Cf", "Cs", "Co", "Cn")
"""Unicode's control, format, surrogate, private-use and unassigned characters."""


def plain(text: str, *, max_line: int = MAX_LINE_CHARS) -> str:
    """`text` without anything a terminal would act on: control characters (C0 but the line
    break, DEL, C1: ESC and CSI among them) and format characters (bidirectional overrides,
    zero-width ones) are removed, tabs become spaces; each line is cut at `max_line`."""
    kept = (
        char
        for char in text.replace("\r\n", "\n").replace("\t", "    ")
        if char == "\n" or unicodedata.category(char) not in _UNPRINTABLE
    )
    lines = "".join(kept).split("\n")
    return "\n".join(
        line if len(line) <= max_line else line[: max_line - 1] + "…" for line in lines
    ).strip("\n")
