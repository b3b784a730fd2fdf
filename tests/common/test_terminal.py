"""`plain`: an operator's text as a terminal may print it (the SSH login banner, the CLI)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from leeward.common.terminal import plain


def test_escape_sequences_and_format_characters_are_removed() -> None:
    text = "a\x1b[31mred\x1b]0;title\x07\x9b2J\u202eevil\u200b\x7f\r\nnext\tline"
    assert plain(text) == "a[31mred]0;title2Jevil\nnext    line"


def test_long_lines_are_cut() -> None:
    assert plain("x" * 500, max_line=10) == "x" * 9 + "…"


@given(st.text())
def test_nothing_a_terminal_acts_on_is_left(text: str) -> None:
    out = plain(text)
    assert not any(ord(c) < 0x20 and c != "\n" for c in out)
    assert not any(0x7F <= ord(c) <= 0x9F for c in out)
