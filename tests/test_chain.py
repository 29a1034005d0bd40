"""Chain storage and chain manager: real regtest blocks (solved proof of work), real signed
spends, a real SQLite file per test.

Covered: 101 blocks then a spend of the first coinbase; reorganisations (coins come back,
undo data, listener order); invalid blocks on a branch (failed / failed-child, tip kept);
invalidateblock / reconsiderblock; locator, find_fork, hashes_after; getchaintips statuses;
reopening; reindex; duplicates, orphans, mutated and future blocks; headers first with blocks
arriving out of order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from cleancoin.components.common.amount import COIN
from cleancoin.components.node.chain import (
    BLOCK_FAILED, BLOCK_FAILED_CHILD, BLOCK_HAVE_DATA, BLOCK_VALID_SCRIPTS, BlockIndex,
    BlockNotFound, ChainManager,
)
from cleancoin.components.common.chainparams import MAIN, REGTEST
from cleancoin.components.common.consensus import Coin, block_subsidy, connect_block_checks
from cleancoin.components.common.errors import Failure, ValidationError
from cleancoin.components.common.keys import PrivateKey, sign_transaction
from cleancoin.components.node.mining import assemble_block, create_coinbase, mine_block, solve
from cleancoin.components.common.pow import check_proof_of_work
from cleancoin.components.common.primitives import Block, OutPoint, Transaction, TxIn, TxOut
from cleancoin.components.node.storage import StorageError, decode_undo, encode_undo

P = REGTEST
GENESIS = P.genesis_block
NOW = 2_100_000_000          # a fixed clock, well after every block time used here
KEY_A = PrivateKey(hashlib.sha256(b"chain key A").digest())
KEY_B = PrivateKey(hashlib.sha256(b"chain key B").digest())
PKH_A = KEY_A.public_key.pkh
PKH_B = KEY_B.public_key.pkh


# ------------------------------------------------------------------------------- helpers

def open_chain(path: Path, **kw: Any) -> ChainManager:
    return ChainManager(P, str(path / "chain.sqlite"), now=lambda: NOW, **kw)


@pytest.fixture
def cm(tmp_path: Path) -> Iterator[ChainManager]:
    chain = open_chain(tmp_path)
    yield chain
    chain.close()


def make_block(cm: ChainManager, parent: BlockIndex | None = None,
               txs: Sequence[Transaction] = (), pkh: bytes = PKH_A, dt: int = 600,
               fees: int = 0) -> Block:
    """A solved block on `parent` (default: the tip); its coinbase claims subsidy + fees."""
    if parent is None:
        parent = cm.tip
    header = parent.header
    return mine_block(header, parent.height + 1, pkh, P, header.time + dt, cm.next_bits(parent),
                      txs, fees)


def branch(cm: ChainManager, parent: BlockIndex, n: int, pkh: bytes = PKH_B, dt: int = 601,
           first_txs: Sequence[Transaction] = ()) -> list[Block]:
    """n solved blocks on `parent`, not accepted. A different payee and spacing than the main
    chain's blocks keep every block (and coinbase) distinct from theirs."""
    out: list[Block] = []
    header, height = parent.header, parent.height
    for i in range(n):
        height += 1
        b = mine_block(header, height, pkh, P, header.time + dt, header.bits,
                       first_txs if i == 0 else (), 0)
        out.append(b)
        header = b.header
    return out


def extend(cm: ChainManager, n: int, pkh: bytes = PKH_A) -> list[Block]:
    out = []
    for _ in range(n):
        b = make_block(cm, pkh=pkh)
        r = cm.accept_block(b)
        assert r.new_tip and not r.already_have
        out.append(b)
    return out


def spend(prevouts: Sequence[OutPoint], outputs: Sequence[tuple[int, bytes]],
          keys: Sequence[PrivateKey]) -> Transaction:
    tx = Transaction(1, tuple(TxIn(op) for op in prevouts), tuple(TxOut(v, pkh) for v, pkh in outputs))
    return sign_transaction(tx, keys)


def cb_out(block: Block) -> OutPoint:
    return OutPoint(block.txs[0].txid, 0)


class Recorder:
    """A listener that records events and checks the chain is committed when it hears one."""

    def __init__(self, cm: ChainManager) -> None:
        self.cm = cm
        self.events: list[tuple[str, int, bytes]] = []

    def block_connected(self, block: Block, index: BlockIndex) -> None:
        assert self.cm.tip.hash == index.hash            # called after the commit
        assert self.cm.utxo(cb_out(block)) is not None or index.height == 0
        self.events.append(("connect", index.height, block.hash))

    def block_disconnected(self, block: Block, index: BlockIndex) -> None:
        assert self.cm.tip.hash == index.prev
        assert self.cm.find_tx(block.txs[0].txid) is None
        self.events.append(("disconnect", index.height, block.hash))


def expect(reason: str) -> Any:
    return pytest.raises(ValidationError, match=reason)


def replay_utxos(cm: ChainManager) -> dict[OutPoint, Coin]:
    """The UTXO set recomputed from the stored blocks of the active chain."""
    view: dict[OutPoint, Coin] = {}

    class V:
        def get(self, op: OutPoint) -> Coin | None:
            return view.get(op)

    for height in range(1, cm.tip.height + 1):
        idx = cm.block_at_height(height)
        assert idx is not None
        block = cm.get_block(idx.hash)
        assert block is not None
        conn = connect_block_checks(block, height, V(), P, verify_signatures=False)
        for op, _ in conn.spent:
            del view[op]
        view.update(conn.created)
    return view


def stored_utxos(cm: ChainManager) -> dict[OutPoint, Coin]:
    return dict(cm._store.iter_utxos())


# ------------------------------------------------------------------------------- basics

def test_fresh_database_holds_genesis_but_not_its_coin(cm: ChainManager) -> None:
    tip = cm.tip
    assert tip.hash == GENESIS.hash and tip.height == 0 and tip.prev == b"\x00" * 32
    assert tip.hash_hex == GENESIS.hash_hex
    assert tip.status & BLOCK_HAVE_DATA and tip.status & BLOCK_VALID_SCRIPTS
    assert cm.get_block(GENESIS.hash) == GENESIS
    assert cm.block_at_height(0) == tip and cm.block_at_height(1) is None
    assert cm.utxo(cb_out(GENESIS)) is None
    assert cm.find_tx(GENESIS.txs[0].txid) is None
    stats = cm.utxo_stats()
    assert stats["txouts"] == 0 and stats["total_amount"] == 0 and stats["height"] == 0
    assert stats["bestblock"] == GENESIS.hash_hex
    assert cm.chain_tips() == [{"height": 0, "hash": GENESIS.hash_hex, "branchlen": 0,
                                "status": "active"}]
    assert cm.locator() == [GENESIS.hash]


def test_database_of_another_network_is_refused(tmp_path: Path) -> None:
    open_chain(tmp_path).close()
    with pytest.raises(StorageError, match="network"):
        ChainManager(MAIN, str(tmp_path / "chain.sqlite"))


def test_one_manager_per_database(cm: ChainManager, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="in use"):
        open_chain(tmp_path)
    cm.close()
    open_chain(tmp_path).close()          # the lock went with close()


def test_101_blocks_then_spend_the_first_coinbase(cm: ChainManager) -> None:
    blocks = extend(cm, 101)
    assert cm.tip.height == 101 and cm.tip.hash == blocks[-1].hash
    stats = cm.utxo_stats()
    assert stats["txouts"] == 101 and stats["total_amount"] == 101 * 50 * COIN
    first = cb_out(blocks[0])
    assert cm.utxo(first) == Coin(50 * COIN, PKH_A, 1, True)
    # Block 3's coinbase is one block short of maturity at height 102 (100 blocks deep).
    early = spend([cb_out(blocks[2])], [(49 * COIN, PKH_B)], [KEY_A])
    bad = make_block(cm, txs=[early], fees=COIN)
    with expect("bad-txns-premature-spend-of-coinbase"):
        cm.accept_block(bad)
    assert cm.tip.height == 101
    bad_idx = cm.get_index(bad.hash)
    assert bad_idx is not None and bad_idx.status & BLOCK_FAILED
    # The first one is spendable: two outputs, a fee of one coin.
    pay = spend([first], [(30 * COIN, PKH_B), (19 * COIN, PKH_A)], [KEY_A])
    b102 = make_block(cm, txs=[pay], fees=COIN, dt=602)
    r = cm.accept_block(b102)
    assert r.new_tip and r.index.height == 102
    assert cm.utxo(first) is None
    assert cm.utxo(OutPoint(pay.txid, 0)) == Coin(30 * COIN, PKH_B, 102, False)
    assert cm.utxo(OutPoint(pay.txid, 1)) == Coin(19 * COIN, PKH_A, 102, False)
    assert cm.utxo(cb_out(b102)) == Coin(51 * COIN, PKH_A, 102, True)
    assert cm.get_undo(b102.hash) == ((first, Coin(50 * COIN, PKH_A, 1, True)),)
    assert cm.find_tx(pay.txid) == (pay, b102.hash)
    assert cm.find_tx(blocks[5].txs[0].txid) == (blocks[5].txs[0], blocks[5].hash)
    stats = cm.utxo_stats()
    # 102 coinbases + 2 outputs - the spent one; the fee moved to the coinbase.
    assert stats["txouts"] == 103 and stats["total_amount"] == 102 * 50 * COIN
    assert stored_utxos(cm) == replay_utxos(cm)
    # A block spending an output of an earlier transaction of the same block.
    t1 = spend([OutPoint(pay.txid, 0)], [(29 * COIN, PKH_A)], [KEY_B])
    t2 = spend([OutPoint(t1.txid, 0)], [(28 * COIN, PKH_B)], [KEY_A])
    b103 = make_block(cm, txs=[t1, t2], fees=2 * COIN)
    cm.accept_block(b103)
    assert cm.get_undo(b103.hash) == ((OutPoint(pay.txid, 0), Coin(30 * COIN, PKH_B, 102, False)),)
    assert cm.utxo(OutPoint(t1.txid, 0)) is None and cm.utxo(OutPoint(t2.txid, 0)) is not None
    assert stored_utxos(cm) == replay_utxos(cm)


def test_duplicate_block_and_orphan(cm: ChainManager) -> None:
    b1 = make_block(cm)
    assert cm.accept_block(b1).new_tip
    again = cm.accept_block(b1)
    assert again.already_have and not again.new_tip and again.index.hash == b1.hash
    assert cm.accept_block(GENESIS).already_have
    b2 = make_block(cm, cm.tip)
    orphan = make_block(cm, cm.get_index(b1.hash), dt=1200)     # a fine block...
    orphan_child = mine_block(orphan.header, 3, PKH_A, P, orphan.header.time + 600,
                              orphan.header.bits)                # ... whose child we get first
    with pytest.raises(ValidationError) as info:
        cm.accept_block(orphan_child)
    assert info.value.reason == "prev-blk-not-found"
    assert cm.get_index(orphan_child.hash) is None and cm.get_block(orphan_child.hash) is None
    assert cm.accept_block(b2).new_tip
    assert cm.tip.height == 2


def test_mutated_and_future_blocks_are_not_marked_invalid(cm: ChainManager, tmp_path: Path) -> None:
    extend(cm, 1)
    good = make_block(cm)
    # Same header, another coinbase: the merkle root no longer matches.
    other_cb = create_coinbase(2, PKH_B, block_subsidy(2, P))
    mutated = Block(good.header, (other_cb,))
    assert mutated.hash == good.hash
    with pytest.raises(ValidationError) as info:
        cm.accept_block(mutated)
    assert info.value.failure is Failure.MUTATED
    idx = cm.get_index(good.hash)
    assert idx is not None and not idx.failed and not idx.have_data    # header kept, valid
    assert cm.accept_block(good).new_tip                               # the real one is fine
    # Too far in the future: refused now, fine later; nothing stored in between.
    future = make_block(cm, dt=NOW - cm.tip.time + 2 * 3600 + 1)
    with pytest.raises(ValidationError) as info:
        cm.accept_block(future)
    assert info.value.reason == "time-too-new" and not info.value.marks_block_invalid
    assert cm.get_index(future.hash) is None
    later = ChainManager(P, str(tmp_path / "other.sqlite"), now=lambda: NOW + 10)
    try:
        for h in range(1, 3):
            blk = cm.get_block(cm.block_at_height(h).hash)   # type: ignore[union-attr]
            assert blk is not None
            later.accept_block(blk)
        assert later.accept_block(future).new_tip
    finally:
        later.close()


def test_block_failing_context_free_checks_is_remembered(cm: ChainManager) -> None:
    extend(cm, 1)
    # A coinbase that does not start with its height: contextual_check_block fails.
    wrong_cb = create_coinbase(7, PKH_A, COIN)
    bad = solve(assemble_block(cm.tip.header, [wrong_cb], cm.tip.time + 600, cm.tip.bits), P)
    assert bad is not None
    with expect("bad-cb-height"):
        cm.accept_block(bad)
    idx = cm.get_index(bad.hash)
    assert idx is not None and idx.status & BLOCK_FAILED and not idx.have_data
    with expect("duplicate-invalid"):
        cm.accept_block(bad)
    child = mine_block(bad.header, 3, PKH_A, P, bad.header.time + 600, bad.header.bits)
    with expect("bad-prevblk"):
        cm.accept_block(child)
    # An unsolved header is not stored at all.
    unsolved = dataclasses.replace(make_block(cm).header, nonce=0)
    while check_proof_of_work(unsolved.hash, unsolved.bits, P):
        unsolved = dataclasses.replace(unsolved, nonce=unsolved.nonce + 1)
    with expect("high-hash"):
        cm.accept_header(unsolved)
    assert cm.get_index(unsolved.hash) is None


def test_listener_failures_and_reentry_do_not_break_the_chain(
        cm: ChainManager, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def block_connected(self, block: Block, index: BlockIndex) -> None:
            raise RuntimeError("listener bug")

    class Reentrant:
        def __init__(self) -> None:
            self.refused: list[str] = []

        def block_connected(self, block: Block, index: BlockIndex) -> None:
            try:
                cm.accept_block(make_block(cm, dt=900))
            except RuntimeError as e:
                self.refused.append(str(e))

    reentrant = Reentrant()
    rec = Recorder(cm)
    for listener in (Broken(), reentrant, rec):
        cm.add_listener(listener)
    extend(cm, 2)
    assert cm.tip.height == 2 and [e[1] for e in rec.events] == [1, 2]
    assert len(reentrant.refused) == 2 and "inside a chain listener" in reentrant.refused[0]
    assert "listener bug" in caplog.text
    cm.remove_listener(rec)
    extend(cm, 1)
    assert len(rec.events) == 2
    # Driven from another thread (asyncio's executor, say), it works the same.
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(lambda: cm.accept_block(make_block(cm)).new_tip).result()
    assert cm.tip.height == 4


# ------------------------------------------------------------------------------- reorgs

def test_reorg_to_heavier_branch_and_back(cm: ChainManager) -> None:
    blocks = extend(cm, 101)
    first = cb_out(blocks[0])
    rec = Recorder(cm)
    cm.add_listener(rec)
    pay = spend([first], [(49 * COIN, PKH_B)], [KEY_A])
    b102 = make_block(cm, txs=[pay], fees=COIN)
    cm.accept_block(b102)
    assert cm.utxo(first) is None and cm.find_tx(pay.txid) == (pay, b102.hash)
    undo_102 = cm.get_undo(b102.hash)
    assert undo_102 == ((first, Coin(50 * COIN, PKH_A, 1, True)),)
    stats_102 = cm.utxo_stats()
    fork_point = cm.block_at_height(101)
    assert fork_point is not None
    # The competing branch spends the same coin differently (a double spend across branches).
    other = spend([first], [(48 * COIN, PKH_A)], [KEY_A])
    f102, f103 = branch(cm, fork_point, 2, first_txs=[other])
    r = cm.accept_block(f102)                   # equal work: the first seen keeps the tip
    assert not r.new_tip and cm.tip.hash == b102.hash
    assert {"height": 102, "hash": f102.hash_hex, "branchlen": 1, "status": "valid-headers"} \
        in cm.chain_tips()
    rec.events.clear()
    r = cm.accept_block(f103)
    assert r.new_tip and cm.tip.hash == f103.hash and cm.tip.height == 103
    assert rec.events == [("disconnect", 102, b102.hash), ("connect", 102, f102.hash),
                          ("connect", 103, f103.hash)]
    # pay is gone, other confirmed; the coin pay created is gone.
    assert cm.find_tx(pay.txid) is None and cm.find_tx(other.txid) == (other, f102.hash)
    assert cm.utxo(OutPoint(pay.txid, 0)) is None
    assert cm.utxo(OutPoint(other.txid, 0)) == Coin(48 * COIN, PKH_A, 102, False)
    assert cm.utxo(cb_out(b102)) is None and cm.utxo(cb_out(f103)) is not None
    assert cm.get_undo(f102.hash) == undo_102                 # the same coin, spent again
    assert not cm.is_in_active_chain(b102.hash) and cm.is_in_active_chain(f102.hash)
    assert stored_utxos(cm) == replay_utxos(cm)
    # Back: the original branch grows heavier. The coin comes back between the two.
    b103, b104 = branch(cm, cm.get_index(b102.hash), 2, pkh=PKH_A, dt=599)  # type: ignore[arg-type]
    rec.events.clear()
    seen: list[Coin | None] = []

    class Watch:
        def block_disconnected(self, block: Block, index: BlockIndex) -> None:
            if index.height == 102:
                seen.append(cm.utxo(first))      # back in the set after f102 is undone

    cm.add_listener(Watch())
    assert not cm.accept_block(b103).new_tip
    assert cm.accept_block(b104).new_tip
    assert seen == [Coin(50 * COIN, PKH_A, 1, True)]
    assert rec.events == [("disconnect", 103, f103.hash), ("disconnect", 102, f102.hash),
                          ("connect", 102, b102.hash), ("connect", 103, b103.hash),
                          ("connect", 104, b104.hash)]
    assert cm.find_tx(pay.txid) == (pay, b102.hash) and cm.find_tx(other.txid) is None
    assert cm.utxo(first) is None
    assert stored_utxos(cm) == replay_utxos(cm)
    tips = {t["hash"]: t for t in cm.chain_tips()}
    assert tips[f103.hash_hex] == {"height": 103, "hash": f103.hash_hex, "branchlen": 2,
                                   "status": "valid-fork"}
    assert tips[b104.hash_hex]["status"] == "active"
    # Undoing the reorg's blocks and replaying lands on the same state as before.
    cm.invalidate_block(b103.hash)
    assert cm.tip.height == 103 and cm.tip.hash == f103.hash      # the heavier remaining chain
    cm.invalidate_block(f102.hash)
    assert cm.tip.hash == b102.hash
    assert cm.utxo_stats() == stats_102


def test_invalid_block_on_a_branch(cm: ChainManager) -> None:
    blocks = extend(cm, 101)
    first = cb_out(blocks[0])
    main_tip = extend(cm, 2)[-1]
    rec = Recorder(cm)
    cm.add_listener(rec)
    stats = cm.utxo_stats()
    fork_point = cm.block_at_height(101)
    assert fork_point is not None
    forged = spend([first], [(49 * COIN, PKH_B)], [KEY_B])     # B's signature on A's coin
    f102, f103, f104 = branch(cm, fork_point, 3, first_txs=[forged])
    assert not cm.accept_block(f102).new_tip
    assert not cm.accept_block(f103).new_tip                   # equal work to the tip
    rec.events.clear()
    with pytest.raises(ValidationError) as info:
        cm.accept_block(f104)                                   # more work: tried, fails
    assert info.value.reason == "mandatory-script-verify-flag-failed"
    assert cm.tip.hash == main_tip.hash and cm.utxo_stats() == stats
    # Tried: the main branch was disconnected, then restored.
    assert [e[0] for e in rec.events] == ["disconnect", "disconnect", "connect", "connect"]
    assert rec.events[-1] == ("connect", 103, main_tip.hash)
    s102, s103, s104 = (cm.get_index(b.hash) for b in (f102, f103, f104))
    assert s102 is not None and s102.status & BLOCK_FAILED
    assert s103 is not None and s103.status & BLOCK_FAILED_CHILD and not s103.status & BLOCK_FAILED
    assert s104 is not None and s104.status & BLOCK_FAILED_CHILD
    assert {"height": 104, "hash": f104.hash_hex, "branchlen": 3, "status": "invalid"} in cm.chain_tips()
    with expect("duplicate-invalid"):
        cm.accept_block(f102)
    with expect("bad-prevblk"):
        cm.accept_block(f104)
    f105 = mine_block(f104.header, 105, PKH_B, P, f104.header.time + 600, f104.header.bits)
    with expect("bad-prevblk"):
        cm.accept_block(f105)
    assert cm.get_index(f105.hash) is None
    # An invalid block straight on the tip (the one-transaction path) is refused as well.
    bad = make_block(cm, txs=[forged], fees=COIN)
    rec.events.clear()
    with expect("mandatory-script-verify-flag-failed"):
        cm.accept_block(bad)
    assert rec.events == [] and cm.tip.hash == main_tip.hash
    bad_idx = cm.get_index(bad.hash)
    assert bad_idx is not None and bad_idx.status & BLOCK_FAILED and bad_idx.have_data
    assert stored_utxos(cm) == replay_utxos(cm)


def test_headers_first_and_blocks_out_of_order(cm: ChainManager) -> None:
    extend(cm, 2)
    b3, b4, b5 = branch(cm, cm.tip, 3, pkh=PKH_A, dt=600)
    for b in (b3, b4, b5):
        idx = cm.accept_header(b.header)
        assert not idx.have_data
    assert cm.best_header.hash == b5.hash and cm.tip.height == 2
    assert {"height": 5, "hash": b5.hash_hex, "branchlen": 3, "status": "headers-only"} in cm.chain_tips()
    rec = Recorder(cm)
    cm.add_listener(rec)
    r5 = cm.accept_block(b5)
    assert not r5.new_tip and r5.index.have_data
    assert not cm.accept_block(b4).new_tip
    r3 = cm.accept_block(b3)
    assert r3.new_tip and cm.tip.hash == b5.hash                  # all three connect
    assert [(e[0], e[1]) for e in rec.events] == [("connect", 3), ("connect", 4), ("connect", 5)]


# ------------------------------------------------------------------------------- invalidate

def test_invalidate_and_reconsider_round_trip(cm: ChainManager) -> None:
    blocks = extend(cm, 10)
    stats_10 = cm.utxo_stats()
    rec = Recorder(cm)
    cm.add_listener(rec)
    cm.invalidate_block(blocks[7].hash)                         # height 8
    assert cm.tip.height == 7 and cm.tip.hash == blocks[6].hash
    assert rec.events == [("disconnect", 10, blocks[9].hash), ("disconnect", 9, blocks[8].hash),
                          ("disconnect", 8, blocks[7].hash)]
    stats_7 = cm.utxo_stats()
    assert stats_7["txouts"] == 7 and stats_7["height"] == 7 and stats_7["bestblock"] == blocks[6].hash_hex
    assert stored_utxos(cm) == replay_utxos(cm)
    s8, s10 = cm.get_index(blocks[7].hash), cm.get_index(blocks[9].hash)
    assert s8 is not None and s8.status & BLOCK_FAILED
    assert s10 is not None and s10.status & BLOCK_FAILED_CHILD
    assert {"height": 10, "hash": blocks[9].hash_hex, "branchlen": 3, "status": "invalid"} in cm.chain_tips()
    # A block on an invalidated one is refused; the tip can grow elsewhere.
    with expect("bad-prevblk"):
        cm.accept_block(mine_block(blocks[9].header, 11, PKH_A, P, blocks[9].header.time + 600,
                                   blocks[9].header.bits))
    # A fork from 6 that is heavier than 7 but lighter than 10.
    fork_point = cm.block_at_height(6)
    assert fork_point is not None
    f7, f8, f9 = branch(cm, fork_point, 3)
    for b in (f7, f8, f9):
        cm.accept_block(b)
    assert cm.tip.hash == f9.hash
    rec.events.clear()
    cm.reconsider_block(blocks[7].hash)
    assert cm.tip.hash == blocks[9].hash and cm.tip.height == 10
    assert rec.events[:3] == [("disconnect", 9, f9.hash), ("disconnect", 8, f8.hash),
                              ("disconnect", 7, f7.hash)]
    assert [e[1] for e in rec.events[3:]] == [7, 8, 9, 10]
    assert cm.utxo_stats() == stats_10
    for b in blocks:
        idx = cm.get_index(b.hash)
        assert idx is not None and not idx.failed
    # Invalidating a block off the active chain changes nothing but its flags.
    cm.invalidate_block(f8.hash)
    assert cm.tip.hash == blocks[9].hash
    f9_idx = cm.get_index(f9.hash)
    assert f9_idx is not None and f9_idx.status & BLOCK_FAILED_CHILD
    # Reconsidering a descendant clears its ancestors too (bitcoind's semantics).
    cm.reconsider_block(f9.hash)
    f8_idx = cm.get_index(f8.hash)
    assert f8_idx is not None and not f8_idx.failed
    with pytest.raises(ValueError):
        cm.invalidate_block(GENESIS.hash)
    with pytest.raises(BlockNotFound):
        cm.invalidate_block(b"\x01" * 32)
    with pytest.raises(BlockNotFound):
        cm.reconsider_block(b"\x01" * 32)


def test_reconsider_of_a_really_invalid_block_fails_again(cm: ChainManager) -> None:
    blocks = extend(cm, 101)
    forged = spend([cb_out(blocks[0])], [(49 * COIN, PKH_B)], [KEY_B])
    bad = make_block(cm, txs=[forged], fees=COIN)
    with expect("mandatory-script-verify-flag-failed"):
        cm.accept_block(bad)
    tip = cm.tip
    with expect("mandatory-script-verify-flag-failed"):
        cm.reconsider_block(bad.hash)
    assert cm.tip == tip
    idx = cm.get_index(bad.hash)
    assert idx is not None and idx.status & BLOCK_FAILED


# ------------------------------------------------------------------------------- P2P helpers

def test_locator_find_fork_and_hashes_after(cm: ChainManager) -> None:
    blocks = [GENESIS, *extend(cm, 40)]
    heights = [cm.get_index(h).height for h in cm.locator()]    # type: ignore[union-attr]
    assert heights == [40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 27, 23, 15, 0]
    # A peer on a fork from 25 that is 5 blocks long.
    fork_point = cm.block_at_height(25)
    assert fork_point is not None
    fork = branch(cm, fork_point, 5)
    for b in fork:
        cm.accept_block(b)
    assert cm.tip.hash == blocks[40].hash
    peer_tip = cm.get_index(fork[-1].hash)
    assert peer_tip is not None
    peer_locator = cm.locator(peer_tip)
    assert cm.find_fork(peer_locator).hash == blocks[25].hash
    assert cm.hashes_after(peer_locator, None, 500) == [b.hash for b in blocks[26:41]]
    assert cm.hashes_after(peer_locator, blocks[28].hash, 500) == [b.hash for b in blocks[26:29]]
    assert cm.hashes_after(peer_locator, None, 3) == [b.hash for b in blocks[26:29]]
    # Unknown hashes are skipped; an empty locator means genesis.
    assert cm.find_fork([b"\x07" * 32, blocks[10].hash]).height == 10
    assert cm.find_fork([]).hash == GENESIS.hash
    assert cm.hashes_after([], None, 2) == [blocks[1].hash, blocks[2].hash]
    # Up to date: nothing to send.
    assert cm.hashes_after(cm.locator(), None, 500) == []
    # A peer ahead of us (we have its headers only): the fork is our tip.
    ahead = branch(cm, cm.tip, 2, pkh=PKH_A, dt=600)
    for b in ahead:
        cm.accept_header(b.header)
    ahead_idx = cm.get_index(ahead[-1].hash)
    assert ahead_idx is not None
    assert cm.find_fork(cm.locator(ahead_idx)).hash == cm.tip.hash
    # median_time_past and next_bits on regtest.
    assert cm.median_time_past(cm.tip) == blocks[35].header.time
    assert cm.next_bits(cm.tip) == GENESIS.header.bits


def test_chain_tips_statuses(cm: ChainManager) -> None:
    main = extend(cm, 5)
    p3 = cm.block_at_height(3)
    assert p3 is not None
    # valid-fork: a branch from 3 takes over (v4..v6), then loses to the main branch (m6, m7).
    v4, v5, v6 = branch(cm, p3, 3, dt=611)
    for b in (v4, v5, v6):
        cm.accept_block(b)
    assert cm.tip.hash == v6.hash
    main5 = cm.get_index(main[4].hash)
    assert main5 is not None
    m6, m7 = branch(cm, main5, 2, pkh=PKH_A, dt=600)
    assert not cm.accept_block(m6).new_tip          # equal work: v6 keeps the tip
    assert cm.accept_block(m7).new_tip
    # valid-headers: a stored sibling of m7, never connected.
    m6_idx = cm.get_index(m6.hash)
    assert m6_idx is not None
    (s7,) = branch(cm, m6_idx, 1, dt=777)
    cm.accept_block(s7)
    # headers-only: a header without its block.
    (h4,) = branch(cm, p3, 1, dt=999)
    cm.accept_header(h4.header)
    # invalid: a block we invalidate.
    (i4,) = branch(cm, p3, 1, dt=555)
    cm.accept_block(i4)
    cm.invalidate_block(i4.hash)
    tips = {t["hash"]: (t["height"], t["branchlen"], t["status"]) for t in cm.chain_tips()}
    assert tips == {
        m7.hash_hex: (7, 0, "active"),
        v6.hash_hex: (6, 3, "valid-fork"),
        s7.hash_hex: (7, 1, "valid-headers"),
        h4.hash_hex: (4, 1, "headers-only"),
        i4.hash_hex: (4, 1, "invalid"),
    }
    assert [t["height"] for t in cm.chain_tips()] == [7, 7, 6, 4, 4]     # highest first


# ------------------------------------------------------------------------------- persistence

def test_reopen_finds_the_same_chain(tmp_path: Path) -> None:
    cm = open_chain(tmp_path)
    blocks = extend(cm, 101)
    pay = spend([cb_out(blocks[0])], [(49 * COIN, PKH_B)], [KEY_A])
    cm.accept_block(make_block(cm, txs=[pay], fees=COIN))
    fork_point = cm.block_at_height(100)
    assert fork_point is not None
    for b in branch(cm, fork_point, 1):
        cm.accept_block(b)
    tip, stats, tips = cm.tip, cm.utxo_stats(), cm.chain_tips()
    locator = cm.locator()
    cm.close()
    with pytest.raises(RuntimeError, match="closed"):
        cm.utxo_stats()
    with open_chain(tmp_path) as again:
        assert again.tip == tip
        assert again.utxo_stats() == stats
        assert again.chain_tips() == tips
        assert again.locator() == locator
        assert again.find_tx(pay.txid) is not None
        by_height = [again.block_at_height(h) for h in range(102)]
        assert [i.hash if i else None for i in by_height] == [GENESIS.hash] + [b.hash for b in blocks]
        assert again.accept_block(make_block(again)).new_tip


def test_reindex_rebuilds_the_same_state(tmp_path: Path) -> None:
    cm = open_chain(tmp_path)
    blocks = extend(cm, 101)
    pay = spend([cb_out(blocks[0])], [(20 * COIN, PKH_B), (29 * COIN, PKH_A)], [KEY_A])
    cm.accept_block(make_block(cm, txs=[pay], fees=COIN))
    fork_point = cm.block_at_height(99)
    assert fork_point is not None
    for b in branch(cm, fork_point, 2):      # a lighter fork that stays a fork
        cm.accept_block(b)
    stats, tip = cm.utxo_stats(), cm.tip
    undo = cm.get_undo(tip.hash)
    reports: list[tuple[str, int, int]] = []
    cm.reindex(lambda stage, h, total: reports.append((stage, h, total)))
    assert cm.utxo_stats() == stats and cm.tip == tip
    assert cm.get_undo(tip.hash) == undo
    assert cm.find_tx(pay.txid) == (pay, tip.hash)
    assert reports[0] == ("reindex", 0, 102) and reports[-1] == ("reindex", 102, 102)
    cm.close()
    with open_chain(tmp_path) as again:
        assert again.utxo_stats() == stats


def test_undo_encoding() -> None:
    coins = [(OutPoint(bytes([i]) * 32, i), Coin(v, bytes([i]) * 20, h, cb))
             for i, (v, h, cb) in enumerate([(0, 0, False), (50 * COIN, 1, True),
                                             (21_000_000 * COIN, 10**6, False), (1, 127, True)])]
    data = encode_undo(coins)
    assert decode_undo(data) == [c for _, c in coins]
    # Compact: the outpoints are not stored.
    assert len(data) < len(coins) * 40
    for broken in (data[:-1], data + b"\x00", b"\x05" + data[1:]):
        with pytest.raises(StorageError):
            decode_undo(broken)


# ----------------------------------------------------------- side branches far behind the tip

def _junk(n: int) -> list[Transaction]:
    """Transactions that pass every context-free block check and spend nothing that exists:
    what fills a side block's megabyte, since a block that is not connected is not checked
    against the coins."""
    return [Transaction(1, (TxIn(OutPoint(hashlib.sha256(b"junk%d" % i).digest(), 0)),),
                        (TxOut(1, PKH_B),)) for i in range(n)]


def test_a_branch_far_behind_the_tip_is_not_stored_one_within_reach_is(tmp_path: Path) -> None:
    """Any peer could make the node store blocks of a branch forked deep in the past, where
    difficulty was low, up to a megabyte each; a full disk stops the node. On the old code all
    of the branch below was stored (a header and its junk block each). Now a branch lagging
    more than max_side_branch_lag blocks' work behind the tip is refused ("too-little-chainwork",
    not invalid, nothing stored); a recent fork still is stored and can still win."""
    cm = open_chain(tmp_path, max_side_branch_lag=5)
    try:
        extend(cm, 20)
        deep = branch(cm, cm.block_at_height(2), 3, first_txs=_junk(200))
        size = os.path.getsize(cm.db_path) + os.path.getsize(cm.db_path + "-wal")
        for i, b in enumerate(deep):
            with pytest.raises(ValidationError) as refused:
                cm.accept_block(b)
            # The first is too far behind; the others then have no parent here.
            assert refused.value.reason == ("too-little-chainwork" if i == 0 else "prev-blk-not-found")
            assert i > 0 or not refused.value.marks_block_invalid
            assert cm.get_index(b.hash) is None                  # not even its header
        assert os.path.getsize(cm.db_path) + os.path.getsize(cm.db_path + "-wal") == size
        # Within reach: stored, and a branch that overtakes the tip becomes it.
        near = branch(cm, cm.block_at_height(16), 5)
        for b in near[:-2]:
            assert not cm.accept_block(b).new_tip
        assert cm.accept_block(near[-2]).new_tip is False       # equal work: the first seen stays
        assert cm.accept_block(near[-1]).new_tip and cm.tip.hash == near[-1].hash
    finally:
        cm.close()
