"""-maxuploadtarget: bitcoind's outbound traffic target per 24 hours.

Serving a block costs the node its size in upload for 36 bytes of request, and a peer may ask
for the same old 1 MB block as often as it likes (the CPU it costs is charged to the peer's
budget: cpu_budget.py; the bytes are not). bitcoind's answer, kept here with its semantics:
every byte sent to peers is counted in a 24-hour cycle (the cycle starts with the first byte
sent after the last one ended); once the bytes sent would leave less than a block a
10 minutes for the rest of the cycle (`MAX_BLOCK_SIZE * time left / 600`), a peer asking for
a block older than a week (HISTORICAL_BLOCK_AGE, against our tip's time) is disconnected
instead of served ("historical block serving limit reached"). Recent blocks, transactions and
everything else are still sent, past the target too. 0 (the default) sets no target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...common.chainparams import MAX_BLOCK_SIZE

#: The cycle the target is for (bitcoind's MAX_UPLOAD_TIMEFRAME).
TIMEFRAME: float = 24 * 60 * 60.0
#: A block older than this against our tip is historical (bitcoind's HISTORICAL_BLOCK_AGE).
HISTORICAL_BLOCK_AGE: int = 7 * 24 * 60 * 60
#: The room kept for relaying each new block once: a block's worth every 10 minutes left.
_BLOCK_INTERVAL: float = 600.0

_UNITS = {"": 1 << 20, "k": 10 ** 3, "K": 1 << 10, "m": 10 ** 6, "M": 1 << 20,
          "g": 10 ** 9, "G": 1 << 30, "t": 10 ** 12, "T": 1 << 40}


def parse_byte_units(text: str) -> int | None:
    """bitcoind's ParseByteUnits with MiB the default unit: digits and an optional unit, k M G T
    in powers of 1024, lower case in powers of 1000 (e.g. "5000", "500M", "2g"); None when
    `text` is not such a value."""
    match = re.fullmatch(r"([0-9]+)([kKmMgGtT]?)", text.strip())
    if match is None:
        return None
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class UploadTarget:
    """The bytes sent in the current cycle against `limit` (bytes per TIMEFRAME; 0: none)."""

    limit: int = 0
    block_size: int = MAX_BLOCK_SIZE
    cycle_start: float = 0.0               # wall time the cycle began (0: none yet)
    sent: int = 0                          # bytes sent in the cycle

    def record(self, nbytes: int, now: float) -> None:
        """`nbytes` were sent to a peer at `now`."""
        if not self.cycle_start or now - self.cycle_start >= TIMEFRAME:
            self.cycle_start, self.sent = now, 0
        self.sent += nbytes

    def time_left(self, now: float) -> float:
        """Seconds until the cycle ends (a whole cycle when none runs)."""
        if not self.cycle_start or now - self.cycle_start >= TIMEFRAME:
            return TIMEFRAME
        return self.cycle_start + TIMEFRAME - now

    def reached(self, now: float, *, historical: bool) -> bool:
        """Whether the target is reached (bitcoind's OutboundTargetReached): for `historical`
        blocks, once what is left would not relay a block every 10 minutes until the cycle
        ends."""
        if not self.limit:
            return False
        sent = self.sent if self.cycle_start and now - self.cycle_start < TIMEFRAME else 0
        if historical:
            buffer = int(self.time_left(now) // _BLOCK_INTERVAL) * self.block_size
            return buffer >= self.limit or sent >= self.limit - buffer
        return sent >= self.limit
