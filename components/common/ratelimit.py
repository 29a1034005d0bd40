"""Token buckets: how often something may happen, with a burst allowance.

Used where a failure must cost an attacker time without costing the server anything: failed
logins on RPC (per source address and overall) and on TCP IPC. A bucket holds at most
`capacity` tokens and gains `rate` tokens per second; an event that finds no token is
refused instead of waited for, so a flood of parallel attempts cannot pass a limit that a
per-request sleep would let through.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """`capacity` tokens at most, `rate` more per second (clock: monotonic seconds)."""

    capacity: float
    rate: float
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _stamp: float = field(init=False)

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.rate <= 0:
            raise ValueError("a token bucket needs a capacity of at least 1 and a positive rate")
        self._tokens = float(self.capacity)
        self._stamp = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(float(self.capacity), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def available(self) -> bool:
        """Whether a token is there now (nothing is taken)."""
        self._refill()
        return self._tokens >= 1.0

    def take(self) -> bool:
        """Take one token; False (and nothing taken) when there is none."""
        self._refill()
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def full(self) -> bool:
        """Back at capacity: indistinguishable from a new bucket."""
        self._refill()
        return self._tokens >= self.capacity

    def retry_after(self) -> float:
        """Seconds until the next token (0 when one is there)."""
        self._refill()
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate


@dataclass(frozen=True)
class Rate:
    """A limit: a burst of `burst` events, then `per_second` on average."""

    burst: int
    per_second: float

    def bucket(self, clock: Callable[[], float] = time.monotonic) -> TokenBucket:
        return TokenBucket(self.burst, self.per_second, clock)


def source_key(address: str) -> str:
    """Who an event is charged to: an IPv4 address, or an IPv6 address's /64 (one host
    commonly holds a whole /64, so charging single IPv6 addresses would not limit it)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class FailureLimiter:
    """Failed attempts, charged to their source and to the whole server.

    `allowed(source)` says whether an attempt from `source` may be checked at all: both its
    source's bucket and the overall one must hold a token. `failed(source)` charges a failure
    to both. Success costs nothing. At most `max_sources` source buckets are kept: full ones
    (sources that stopped failing) are dropped first, then the oldest, so a flood of sources
    cannot grow memory; the overall bucket still bounds what they achieve together.
    """

    per_source: Rate
    overall: Rate
    max_sources: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _total: TokenBucket = field(init=False)
    _sources: OrderedDict[str, TokenBucket] = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self._total = self.overall.bucket(self.clock)

    def allowed(self, source: str) -> bool:
        """May an attempt from `source` be checked now?"""
        # No failure held anywhere: no address to parse (the RPC server asks on every
        # request; issue #16).
        if not self._sources:
            return self._total.available()
        bucket = self._sources.get(source_key(source))
        return self._total.available() and (bucket is None or bucket.available())

    def failed(self, source: str) -> None:
        """Charge one failure to `source` and to the whole."""
        key = source_key(source)
        bucket = self._sources.pop(key, None) or self.per_source.bucket(self.clock)
        bucket.take()
        self._sources[key] = bucket                       # most recent last
        self._total.take()
        if len(self._sources) > self.max_sources:
            self._prune()

    def retry_after(self, source: str) -> float:
        """Seconds until an attempt from `source` would be allowed again."""
        bucket = self._sources.get(source_key(source))
        return max(self._total.retry_after(), bucket.retry_after() if bucket is not None else 0.0)

    def _prune(self) -> None:
        for key in [k for k, b in self._sources.items() if b.full()]:
            del self._sources[key]
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
