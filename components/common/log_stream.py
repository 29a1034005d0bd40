"""A log handler that outlives a log it cannot write.

logging.StreamHandler answers a failed write with logging's own report on stderr, a
"--- Logging error ---" traceback, for every record while the failure lasts. The log file
lies on the datadir's filesystem, which a full disk (or a confined wallet process that filled
it: docs/node.md, "A full or failing disk") stops taking. The node then shuts down cleanly and
says why on stderr; a traceback per log line around that says nothing more and buries it.
bitcoind's LogPrintStr ignores a failed fwrite likewise. Here the record is lost, and the
first failure (and the first of another kind) is said once, in one line, on stderr.
"""

from __future__ import annotations

import logging
import sys
from typing import IO


class LogStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """StreamHandler whose write failures (OSError: ENOSPC, EIO, EDQUOT, EFBIG, EPIPE) lose
    the record and are said once on stderr; `what` names the log in that line."""

    def __init__(self, stream: IO[str], what: str) -> None:
        super().__init__(stream)
        self.what = what
        self._failing: int | None = None     # errno of the failure being reported
        self._failed_now = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        super().emit(record)
        if not self._failed_now:
            self._failing = None             # writing again: a later failure is said again

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)      # a bug in a record (bad format arguments): loud
            return
        self._failed_now = True
        if self._failing == error.errno:
            return
        self._failing = error.errno
        if self.stream is sys.stderr:
            return                           # nowhere else to say it
        try:
            sys.stderr.write(f"Error: cannot write {self.what} ({error.strerror or error}); "
                             "log lines are lost until it can be written again\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
