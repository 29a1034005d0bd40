"""The known-inventory rolling Bloom filter hashes under a random key per filter: a peer (or
anyone who gets transactions relayed) cannot precompute items whose bits hide another item.
"""

from __future__ import annotations

import os
import struct

from cleancoin.components.node.p2p.bloom import RollingBloomFilter
from cleancoin.components.node.p2p.peer import KNOWN_INVENTORY_SIZE

WORDS = struct.Struct("<5I")


def test_items_crafted_to_cover_a_transaction_do_not_hide_it() -> None:
    """Attack: five crafted 'hashes', each carrying one of the target's five 32-bit words (the
    bit positions when an item's own bytes are its hash functions). Before 12-06 adding them
    made the target "known" in every filter, on every node (so no peer would be told about
    it); with a key per filter they set five unrelated bits."""
    target = os.urandom(32)
    crafted = [WORDS.pack(word, *struct.unpack("<4I", os.urandom(16))) + os.urandom(12)
               for word in WORDS.unpack_from(target)]
    for _ in range(2):
        known = RollingBloomFilter(KNOWN_INVENTORY_SIZE)
        for item in crafted:
            known.add(item)
        assert all(item in known for item in crafted)
        assert target not in known


def test_two_filters_do_not_share_false_positives() -> None:
    """Two filters holding the same items: what one wrongly answers "present" for (found by
    probing, as a peer would) is, apart from chance (2e-5 each), not present in the other.
    Unkeyed, the two were the same bits and shared every false positive."""
    a, b = RollingBloomFilter(200), RollingBloomFilter(200)
    for _ in range(199):                     # two generations, full: ~2e-5 per probe
        item = os.urandom(32)
        a.add(item)
        b.add(item)
    found: list[bytes] = []
    for _ in range(3_000_000):
        probe = os.urandom(32)
        if probe in a:
            found.append(probe)
            if len(found) == 3:
                break
    assert len(found) == 3, "no false positives found to compare"
    assert sum(probe in b for probe in found) == 0, found
