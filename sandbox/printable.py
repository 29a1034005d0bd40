"""Text that another party chose (a third-party policy, a learned program's file names), made
safe to show and to write into a policy.

Refused or shown as \\uXXXX: C0 and C1 controls and DEL (escape sequences retitle, clear or
rewrite the auditor's terminal; a newline in a path became a directive of its own in an
exported systemd unit), Unicode's format characters (bidi overrides and zero-width characters:
what a reviewer reads would not be what is granted) and lone surrogates (a file name that is
not UTF-8: no policy file can hold it). Tab is refused too: no path or name needs one.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False     # not typing's: `CleanCoin-sandbox run` imports this and never typing

if TYPE_CHECKING:
    from typing import TextIO

# Every format character (category Cf) of Unicode 15, not only the bidi and zero-width ones:
# until 12-06 (h33) the tag characters U+E0020-U+E007F (an invisible copy of ASCII), the
# invisible musical and shorthand controls, and the signs drawn over the digits that follow
# (U+0600-U+0605, U+08E2) passed. Besides them, characters that are not Cf but show nothing
# and carry text: the Hangul fillers and the variation selectors U+E0100-U+E01EF (after any
# character; U+FE00-U+FE0F stay, emoji use them). tests/test_printable.py checks the Cf list
# against the running Python's Unicode database.
PATTERN = (r"[\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
           r"\u115f\u1160\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ufeff\uffa0"
           r"\ufff9-\ufffb\ud800-\udfff\U000110bd\U000110cd\U00013430-\U0001343f"
           r"\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
           r"\U000e0100-\U000e01ef]")


#: The same, newlines and tabs excepted: text of several lines.
PATTERN_IN_LINES = PATTERN.replace(r"\x00-\x1f", r"\x00-\x08\x0b-\x1f")


def _unprintable() -> re.Pattern[str]:
    # Compiled at first use, not at import (about 1 ms each for these classes on the 2-core
    # test machine, paid by every CleanCoin-sandbox start, which mostly never writes text
    # of others); afterwards re's own cache answers.
    return re.compile(PATTERN)


def _unprintable_in_lines() -> re.Pattern[str]:
    return re.compile(PATTERN_IN_LINES)


def __getattr__(name: str) -> re.Pattern[str]:
    """UNPRINTABLE and UNPRINTABLE_IN_LINES, the compiled patterns, compiled when asked for."""
    if name == "UNPRINTABLE":
        return _unprintable()
    if name == "UNPRINTABLE_IN_LINES":
        return _unprintable_in_lines()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def printable(text: str) -> bool:
    """Whether `text` holds none of the characters above."""
    return _unprintable().search(text) is None


def visible(text: str) -> str:
    """`text` with each of those characters shown as \\uXXXX."""
    return _unprintable().sub(lambda m: _code(ord(m.group(0))), text)


class VisibleWriter:
    """A text stream (sys.stdout, sys.stderr) that shows every character above as \\uXXXX,
    newlines and tabs kept: a tool's text output carries strings that others chose (policy
    files, a learned program's paths, a probed child's answers), and must not reach the
    terminal as escape sequences. The rest is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_unprintable_in_lines().sub(lambda m: _code(ord(m.group(0))), text))
        return len(text)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def escaped(text: str, *, lines: bool = False) -> str:
    """`text` with each of those characters shown as \\xNN (as bitcoind's log escapes a byte),
    \\uXXXX above U+00FF; newlines and tabs too, unless `lines` (text of several lines)."""
    return (_unprintable_in_lines() if lines else _unprintable()).sub(_escape, text)


def non_ascii(text: str) -> int:
    """Where `text`'s first character outside ASCII is, or -1. Such a character may print as
    another (Cyrillic U+0430 as 'a', a no-break space as a space, a combining mark over the
    letter before it): a policy's paths, names and values are ASCII (policy_loader)."""
    if text.isascii():
        return -1
    return next(i for i, ch in enumerate(text) if ord(ch) > 0x7F)


def char_name(char: str) -> str:
    """'U+0430 CYRILLIC SMALL LETTER A': a character named so that no lookalike can pass for it."""
    import unicodedata  # only for an error message
    return f"U+{ord(char):04X} {unicodedata.name(char, 'unnamed')}"


def ascii_shown(text: str) -> str:
    """`text` with every character outside printable ASCII written as \\xNN or \\uXXXX."""
    return escaped(text).encode("ascii", "backslashreplace").decode("ascii")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else _code(code)


def _code(code: int) -> str:
    # \UXXXXXXXX above the BMP, as Python writes it: \u with five digits reads as another
    # character followed by a digit.
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
