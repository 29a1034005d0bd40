"""Orphan transactions: ones a peer sent before their parents (bitcoind's TxOrphanage).

A transaction whose inputs are unknown may be valid once a parent arrives. Refusing it until
the tip moves (as the node did before 12-07) let any peer that saw a child before us keep it
out of our pool: the honest relay of the same child came after and was not even asked for.
Kept here instead, it is tried again when a transaction it spends enters the pool.

An orphan is kept while a peer that sent or announced it is connected (bitcoind v29's
announcer set). Bounded as bitcoind's (DEFAULT_MAX_ORPHAN_TRANSACTIONS, 100;
ORPHAN_TX_EXPIRE_TIME, 20 minutes), and also by serialized bytes (MAX_ORPHAN_BYTES): in
Python a 100 KB transaction of thousands of outputs takes five times its size in memory, so
100 of the largest would be some 50 MB. A full pool drops a random orphan of the peer whose
orphans take the most bytes (its first announcer's), as bitcoind v29 trims the peer using
the most: a peer flooding orphans pushes out its own, not another peer's (before v29 the
victim was any random orphan: a flood of 200 left an honest orphan a chance of 13%).

A connected block removes at once the orphans it confirms or conflicts with (bitcoind's
EraseForBlock, since 12-07; before, they held their slots and bytes until the 20-minute
expiry). An orphan tried again that still misses an input keeps its place, announcers and
expiry (bitcoind v29 keeps it in the orphanage; before 12-07 it was put back with only its
first announcer). Not thread-safe: the P2P event loop owns it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from ...common.primitives import Transaction

__all__ = ["MAX_ORPHANS", "MAX_ORPHAN_BYTES", "ORPHAN_EXPIRE_SECONDS", "OrphanPool"]

#: Orphans kept at most (bitcoind's DEFAULT_MAX_ORPHAN_TRANSACTIONS).
MAX_ORPHANS: int = 100
#: Serialized bytes of all orphans at most: ten standard-size (100 KB) transactions.
MAX_ORPHAN_BYTES: int = 1_000_000
#: An orphan whose parent did not come within this is dropped (ORPHAN_TX_EXPIRE_TIME).
ORPHAN_EXPIRE_SECONDS: float = 20 * 60


@dataclass(slots=True)
class _Orphan:
    """One kept orphan: the transaction, who vouches for it, until when, and its order."""

    tx: Transaction
    peers: list[int]    # who sent or announced it, first the one charged if it is invalid
    expires: float      # loop time
    seq: int            # arrival order


class OrphanPool:
    """Transactions waiting for a parent, with who sent them; see the module docstring."""

    def __init__(self, max_count: int = MAX_ORPHANS, max_bytes: int = MAX_ORPHAN_BYTES,
                 expire_seconds: float = ORPHAN_EXPIRE_SECONDS) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.expire_seconds = expire_seconds
        self._orphans: dict[bytes, _Orphan] = {}
        self._by_parent: dict[bytes, set[bytes]] = {}     # spent txid -> orphans spending it
        self._bytes = 0
        self._seq = 0
        # Not seeded from anything a peer sends: which orphan a full pool drops is unpredictable.
        self._random = random.SystemRandom()

    def __contains__(self, txid: object) -> bool:
        return txid in self._orphans

    def __len__(self) -> int:
        return len(self._orphans)

    @property
    def bytes(self) -> int:
        """Serialized size of all orphans."""
        return self._bytes

    def add(self, tx: Transaction, peer_id: int, now: float) -> list[bytes]:
        """Keep `tx` (sent by `peer_id`) until a parent arrives; the txids dropped to make
        room (possibly `tx` itself: over the byte bound alone, or one of the orphans of the
        peer that has the most). Adding one already kept changes nothing."""
        txid = tx.txid
        if txid in self._orphans:
            return []
        if tx.size > self.max_bytes:
            return [txid]
        self._orphans[txid] = _Orphan(tx, [peer_id], now + self.expire_seconds, self._seq)
        self._seq += 1
        self._bytes += tx.size
        for parent in {txin.prevout.txid for txin in tx.vin}:
            self._by_parent.setdefault(parent, set()).add(txid)
        dropped: list[bytes] = []
        while len(self._orphans) > self.max_count or self._bytes > self.max_bytes:
            victim = self._random.choice(self._heaviest_peers_orphans())
            self.remove(victim)
            dropped.append(victim)
        return dropped

    def _heaviest_peers_orphans(self) -> list[bytes]:
        """The orphans of the peer (first announcer) whose orphans take the most bytes."""
        by_peer: dict[int, list[bytes]] = {}
        weight: dict[int, int] = {}
        for t, o in self._orphans.items():
            by_peer.setdefault(o.peers[0], []).append(t)
            weight[o.peers[0]] = weight.get(o.peers[0], 0) + o.tx.size
        return by_peer[max(weight, key=lambda p: (weight[p], len(by_peer[p])))]

    def add_announcer(self, txid: bytes, peer_id: int) -> None:
        """`peer_id` sent or announced `txid`, which is kept: the orphan stays while any of
        its announcers is connected (bitcoind v29's orphanage keeps announcers too). A txid
        names the exact bytes (there is no witness), so an announcer vouches for them as
        much as the sender did."""
        orphan = self._orphans.get(txid)
        if orphan is not None and peer_id not in orphan.peers:
            orphan.peers.append(peer_id)

    def remove(self, txid: bytes) -> tuple[Transaction, int] | None:
        """Forget `txid`; its transaction and the first of its announcers still there (the
        one to charge if it is invalid), or None if it was not kept."""
        orphan = self._orphans.pop(txid, None)
        if orphan is None:
            return None
        self._bytes -= orphan.tx.size
        for parent in {txin.prevout.txid for txin in orphan.tx.vin}:
            children = self._by_parent.get(parent)
            if children is not None:
                children.discard(txid)
                if not children:
                    del self._by_parent[parent]
        return orphan.tx, orphan.peers[0]

    def children(self, parent: bytes) -> list[tuple[Transaction, int]]:
        """(transaction, sender: its first announcer still connected) of every orphan
        spending an output of `parent` (a transaction that just entered the pool), oldest
        first. They stay kept: the caller removes the ones it accepted or refused, and one
        still missing an input keeps its announcers and expiry."""
        kept = sorted((self._orphans[c] for c in self._by_parent.get(parent, ())), key=lambda o: o.seq)
        return [(o.tx, o.peers[0]) for o in kept]

    def erase_for_block(self, txs: Iterable[Transaction]) -> int:
        """A block of `txs` was connected: drop the orphans it confirms and those spending an
        output one of its transactions spends (conflicts: never valid on this chain); how
        many (bitcoind's EraseForBlock)."""
        if not self._orphans:
            return 0                    # (the common case, and every block of a download)
        doomed: set[bytes] = set()
        for tx in txs:
            if tx.txid in self._orphans:
                doomed.add(tx.txid)
            for txin in tx.vin:
                for t in self._by_parent.get(txin.prevout.txid, ()):
                    if any(i.prevout == txin.prevout for i in self._orphans[t].tx.vin):
                        doomed.add(t)
        return self._remove_all(doomed)

    def remove_for_peer(self, peer_id: int) -> int:
        """`peer_id` disconnected: drop the orphans nobody else announced; how many. (Only
        its sender's would let that sender take back a child an honest peer announced after
        it: the announcement was not followed, since the orphan was there.)"""
        doomed = []
        for t, o in self._orphans.items():
            if o.peers == [peer_id]:
                doomed.append(t)
            elif peer_id in o.peers:
                o.peers.remove(peer_id)
        return self._remove_all(doomed)

    def expire(self, now: float) -> int:
        """Drop the orphans older than the expiry; how many."""
        return self._remove_all(t for t, o in self._orphans.items() if o.expires <= now)

    def _remove_all(self, txids: Iterable[bytes]) -> int:
        doomed = list(txids)
        for t in doomed:
            self.remove(t)
        return len(doomed)
