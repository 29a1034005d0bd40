"""A cap on how much the P2P layer writes to the log per call site: bitcoind's LogRateLimiter.

Remote peers decide how often some lines are written: every connection that misbehaves
writes a "misbehaving" and a "banning" line, every handshake a "New inbound peer" line, and
connections cost an attacker next to nothing, so without a cap the log (debug.log, on disk)
grows as fast as they connect, until the disk is full. As bitcoind (v30) does, each source
location (file and line) may write `budget` bytes of messages per `window` seconds (1 MiB per
hour); past that its lines are dropped, with one warning that says so, and the count of
dropped lines is logged when the window ends. DEBUG lines are not limited: they appear only
with -debug=net, which the operator asks for (bitcoind does not limit its debug categories
either).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Bytes of messages one source location may log per window (bitcoind: 1 MiB per hour).
LOG_BUDGET_BYTES: int = 1024 * 1024
LOG_WINDOW_SECONDS: float = 3600.0


@dataclass
class _Site:
    """One call site's allowance in the current window: bytes used, lines dropped."""

    window_start: float
    used: int = 0
    dropped: int = 0


class LogRateLimit(logging.Filter):
    """A logging filter: at most `budget` bytes of messages per source location per `window`
    seconds, for records at INFO and above."""

    def __init__(self, budget: int = LOG_BUDGET_BYTES, window: float = LOG_WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.budget = budget
        self.window = window
        self._clock = clock
        # One entry per logging call site in the code: a fixed, small set.
        self._sites: dict[tuple[str, int], _Site] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO or getattr(record, "rate_limit_notice", False):
            return True
        now = self._clock()
        key = (record.pathname, record.lineno)
        site = self._sites.get(key)
        if site is None:
            site = self._sites[key] = _Site(now)
        elif now - site.window_start >= self.window:
            if site.dropped:
                self._notice(record, f"Restarting logging from {_where(key)}: {site.dropped} "
                                     f"lines were suppressed")
            site.window_start, site.used, site.dropped = now, 0, 0
        size = len(record.getMessage())
        if site.used + size > self.budget:
            if not site.dropped:
                left = site.window_start + self.window - now
                self._notice(record, f"Excessive logging detected from {_where(key)}: suppressing "
                                     f"logging from this source location for the next {left:.0f} s")
            site.dropped += 1
            return False
        site.used += size
        return True

    @staticmethod
    def _notice(record: logging.LogRecord, text: str) -> None:
        logger = logging.getLogger(record.name)
        logger.warning(text, extra={"rate_limit_notice": True})


def _where(key: tuple[str, int]) -> str:
    path, line = key
    return f"{path.rsplit('/', 1)[-1]}:{line}"


def install(logger: logging.Logger) -> LogRateLimit:
    """Attach the default limit to `logger` once (again: the one already there)."""
    for f in logger.filters:
        if isinstance(f, LogRateLimit):
            return f
    limit = LogRateLimit()
    logger.addFilter(limit)
    return limit
