"""The orphan pool's bounds and indexes (components/node/p2p/orphans.py)."""

from __future__ import annotations

import os

from cleancoin.components.common.primitives import OutPoint, Transaction, TxIn, TxOut
from cleancoin.components.node.p2p.orphans import MAX_ORPHANS, OrphanPool

PKH = bytes(20)


def _orphan(parent: bytes | None = None, outputs: int = 1) -> Transaction:
    """A transaction spending output 0 of `parent` (default: a made-up txid)."""
    return Transaction(2, (TxIn(OutPoint(parent or os.urandom(32), 0)),),
                       tuple(TxOut(1000, PKH) for _ in range(outputs)), 0)


def test_a_flood_keeps_at_most_the_count_and_pushes_out_only_the_flooders_orphans() -> None:
    """One peer's orphan, then another's flood: the flood's own orphans make room, never
    the first peer's (with a random victim among all, it survived 200 adds 13% of the time)."""
    pool = OrphanPool()
    honest = _orphan()
    pool.add(honest, peer_id=1, now=0.0)
    dropped: list[bytes] = []
    for _ in range(10 * MAX_ORPHANS):
        dropped += pool.add(_orphan(), peer_id=2, now=0.0)
        assert len(pool) <= MAX_ORPHANS
    assert len(pool) == MAX_ORPHANS and len(dropped) == 9 * MAX_ORPHANS + 1
    assert honest.txid in pool and not any(t in pool for t in dropped)
    # Once the first peer floods too, its own orphans go as soon as they weigh the most:
    # the two end up sharing the pool, neither pushed out by the other.
    for _ in range(MAX_ORPHANS):
        pool.add(_orphan(outputs=3), peer_id=1, now=0.0)
    first, second = pool.remove_for_peer(1), pool.remove_for_peer(2)
    assert first + second == MAX_ORPHANS and first >= 30 and second >= 30, (first, second)


def test_the_byte_bound_holds_and_a_transaction_over_it_is_not_kept() -> None:
    pool = OrphanPool(max_bytes=50_000)
    for _ in range(20):
        pool.add(_orphan(outputs=400), peer_id=1, now=0.0)         # 11.2 KB each
        assert pool.bytes <= 50_000
    assert len(pool) == 4
    huge = _orphan(outputs=1900)               # 53 KB
    assert pool.add(huge, peer_id=1, now=0.0) == [huge.txid] and huge.txid not in pool
    assert len(pool) == 4


def test_children_are_listed_in_arrival_order_with_their_sender_and_stay_kept() -> None:
    pool = OrphanPool()
    parent = os.urandom(32)
    first, second, other = _orphan(parent), _orphan(parent, outputs=2), _orphan()
    for peer, tx in ((7, first), (8, second), (9, other)):
        pool.add(tx, peer, now=0.0)
    assert pool.children(parent) == [(first, 7), (second, 8)]
    assert len(pool) == 3                       # the caller removes what it settled
    pool.remove(first.txid)
    assert pool.children(parent) == [(second, 8)]
    pool.remove(second.txid)
    assert pool.children(parent) == [] and len(pool) == 1
    assert pool.bytes == other.size


def test_a_block_drops_the_orphans_it_confirms_or_conflicts_with_and_no_other() -> None:
    """bitcoind's EraseForBlock: before 12-07 such orphans held their place 20 minutes."""
    pool = OrphanPool()
    parent = os.urandom(32)
    confirmed, conflicting, other_output, unrelated = (
        _orphan(), _orphan(parent), Transaction(2, (TxIn(OutPoint(parent, 1)),), (TxOut(5, PKH),), 0), _orphan())
    for tx in (confirmed, conflicting, other_output, unrelated):
        pool.add(tx, 1, now=0.0)
    rival = Transaction(2, (TxIn(OutPoint(parent, 0)),), (TxOut(7, PKH),), 0)     # spends parent:0 too
    assert pool.erase_for_block([rival, confirmed]) == 2
    assert confirmed.txid not in pool and conflicting.txid not in pool
    assert other_output.txid in pool and unrelated.txid in pool         # parent:1 is still unspent
    assert pool.children(parent) == [(other_output, 1)]
    assert pool.erase_for_block([rival]) == 0
    assert pool.bytes == other_output.size + unrelated.size


def test_a_peers_orphans_go_with_it_and_old_ones_expire() -> None:
    pool = OrphanPool(expire_seconds=60)
    mine, theirs, later = _orphan(), _orphan(), _orphan()
    pool.add(mine, 1, now=0.0)
    pool.add(theirs, 2, now=0.0)
    pool.add(later, 2, now=30.0)
    assert pool.remove_for_peer(1) == 1 and mine.txid not in pool
    assert pool.expire(59.0) == 0
    assert pool.expire(60.0) == 1 and theirs.txid not in pool and later.txid in pool
    assert pool.expire(90.0) == 1 and len(pool) == 0 and pool.bytes == 0


def test_an_orphan_stays_while_anyone_that_announced_it_is_connected() -> None:
    pool = OrphanPool()
    parent = os.urandom(32)
    tx = _orphan(parent)
    pool.add(tx, 1, now=0.0)
    pool.add_announcer(tx.txid, 2)
    pool.add_announcer(tx.txid, 2)                      # twice: one entry
    pool.add_announcer(os.urandom(32), 3)               # not an orphan: nothing
    assert pool.remove_for_peer(1) == 0 and tx.txid in pool
    assert pool.children(parent) == [(tx, 2)]           # the announcer left is charged
    pool.remove(tx.txid)
    pool.add(tx, 1, now=0.0)
    pool.add_announcer(tx.txid, 2)
    assert pool.remove_for_peer(2) == 0 and pool.remove_for_peer(1) == 1 and len(pool) == 0
