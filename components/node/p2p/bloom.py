"""A rolling Bloom filter for 32-byte hashes: bitcoind's CRollingBloomFilter, simplified.

What a peer is known to have (so that it is not told about it again) must be remembered for
every peer, and a peer fills it just by announcing hashes: an exact set of 50000 hashes
costs 8.5 MB per peer in Python, which a few MB of `inv` from each of 115 inbound peers turn
into a gigabyte. A Bloom filter holds the same capacity in a fixed 300 kB; its false
positives (about 1 in 100000 here) only mean that a peer is not told about one item, which
it then learns from another peer (bitcoind accepts 1 in a million for the same filter).

"Rolling": two generations of `capacity / 2` items each; when the current one is full, the
older is dropped and a fresh one begins, so the last `capacity / 2` to `capacity` items are
remembered. Each filter hashes items under a random key of its own (keyed BLAKE2b, as
bitcoind's CRollingBloomFilter tweaks MurmurHash3 per filter): the item's own bytes as the bit
positions (as before 12-06) let anyone who can get a few transactions relayed precompute ones
whose hashes set the five bits of a chosen transaction in every peer's filter on every node,
which then tells no peer about it. With a key per filter nobody can aim at a bit, and a false
positive of one filter is not one of another.
"""

from __future__ import annotations

import hashlib
import os
import struct

#: Bits per item in a generation, and the number of bit positions per item (k). With 48 and
#: 5 a full generation answers a false "present" with probability (1 - e^(-5/48))^5, 9.4e-6.
_BITS_PER_ITEM = 48
_WORDS = struct.Struct("<5I")
#: Bytes of each filter's key (BLAKE2b takes up to 64).
_KEY_BYTES = 16


class RollingBloomFilter:
    """Remembers at least the last `capacity / 2` 32-byte items added (probabilistically:
    `in` never answers False for one of them, and rarely True for another)."""

    def __init__(self, capacity: int) -> None:
        self._generation_size = max(1, (capacity + 1) // 2)
        self._bits = self._generation_size * _BITS_PER_ITEM
        self._nbytes = (self._bits + 7) // 8
        # Allocated on first use: a connection that never gets that far costs nothing.
        self._current = bytearray()
        self._previous = bytearray()
        self._count = 0
        # Keyed once: a copy of the keyed state per item costs less than keying again.
        self._keyed = hashlib.blake2b(digest_size=_WORDS.size, key=os.urandom(_KEY_BYTES))

    def _positions(self, item: bytes) -> tuple[int, ...]:
        hasher = self._keyed.copy()
        hasher.update(item)
        return _WORDS.unpack(hasher.digest())

    def add(self, item: bytes) -> None:
        """Remember `item` (bytes; hashes are 32)."""
        m, f = self._bits, self._current
        if not f:
            f = self._current = bytearray(self._nbytes)
        a, b, c, d, e = self._positions(item)
        a %= m
        f[a >> 3] |= 1 << (a & 7)
        b %= m
        f[b >> 3] |= 1 << (b & 7)
        c %= m
        f[c >> 3] |= 1 << (c & 7)
        d %= m
        f[d >> 3] |= 1 << (d & 7)
        e %= m
        f[e >> 3] |= 1 << (e & 7)
        self._count += 1
        if self._count >= self._generation_size:
            self._previous, self._current = f, bytearray()
            self._count = 0

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, (bytes, bytearray)):
            return False
        m = self._bits
        positions = [w % m for w in self._positions(item)]
        return _all_set(self._current, positions) or _all_set(self._previous, positions)

    @property
    def nbytes(self) -> int:
        """Memory of the two bit arrays."""
        return len(self._current) + len(self._previous)


def _all_set(bits: bytearray, positions: list[int]) -> bool:
    return bool(bits) and all(bits[p >> 3] >> (p & 7) & 1 for p in positions)
