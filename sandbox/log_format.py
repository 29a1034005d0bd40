"""Log records that may carry text others chose, as a log file or a console may hold them.

A module of its own, not printable.py: the policy tools import that one and must not import
`logging` (tests/test_sandbox_startup.py).
"""

from __future__ import annotations

import logging

from .printable import escaped

#: What a continuation line of a record starts with in a log (`LogFormatter`).
CONTINUATION = "  "


class LogFormatter(logging.Formatter):
    """A log record as a log file or console may hold it, whatever its message carries: the
    debug logs hold text others chose (a node's RPC errors and wallet names in the window's
    log, a wallet process's answers in the node's). Every character printable.py names is
    escaped, as bitcoind's LogEscapeMessage does (escape sequences would rewrite the screen of whoever
    reads the log in a terminal, or write their clipboard: OSC 52), and every line after a
    record's first (a line break in a message, a traceback) starts with CONTINUATION: a line
    that starts at its first column is a record the process wrote, never one a string it
    logged forged (nor a carriage return that hides the rest). Nothing is dropped."""

    def format(self, record: logging.LogRecord) -> str:
        return escaped(super().format(record), lines=True).replace("\n", "\n" + CONTINUATION)
