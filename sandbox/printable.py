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
from typing import TextIO

UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
                         r"\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff]")


def printable(text: str) -> bool:
    """Whether `text` holds none of the characters above."""
    return UNPRINTABLE.search(text) is None


def visible(text: str) -> str:
    """`text` with each of those characters shown as \\uXXXX."""
    return UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


#: The same, newlines and tabs excepted: text of several lines.
UNPRINTABLE_IN_LINES = re.compile(UNPRINTABLE.pattern.replace(r"\x00-\x1f", r"\x00-\x08\x0b-\x1f"))


class VisibleWriter:
    """A text stream (sys.stdout, sys.stderr) that shows every character above as \\uXXXX,
    newlines and tabs kept: a tool's text output carries strings that others chose (policy
    files, a learned program's paths, a probed child's answers), and must not reach the
    terminal as escape sequences. The rest is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(UNPRINTABLE_IN_LINES.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text))
        return len(text)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def escaped(text: str, *, lines: bool = False) -> str:
    """`text` with each of those characters shown as \\xNN (as bitcoind's log escapes a byte),
    \\uXXXX above U+00FF; newlines and tabs too, unless `lines` (text of several lines)."""
    return (UNPRINTABLE_IN_LINES if lines else UNPRINTABLE).sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
