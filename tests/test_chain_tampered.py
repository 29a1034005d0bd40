"""A chain database changed by something other than the chain manager: what the next start
believes.

Under CleanCoin-node the confined node writes chainstate.sqlite, and a compromised node can
write any row there. Whatever opens the file next (the node's next start, or CleanCoind,
unconfined, with its wallet in the same process) loaded the block index as stored: a header
without proof of work, or a branch whose stored chain work was made up, became the tip at
start. bitcoind checks every index entry's proof of work when it loads its index and computes
the chain work again (LoadBlockIndex); this manager now does the same, and the header rules
that need the parent (the difficulty a block must carry, its time) too, because here the
writer is not trusted.

Each test plants rows with plain SQL into a real database the manager wrote, as the attacker
would, then opens it again.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from cleancoin.components.common.amount import COIN
from cleancoin.components.common.pow import block_proof, check_proof_of_work
from cleancoin.components.common.primitives import Block, OutPoint, Transaction
from cleancoin.components.node.chain import (
    BLOCK_FAILED, BLOCK_FAILED_CHILD, BLOCK_HAVE_DATA, BLOCK_VALID_SCRIPTS, BLOCK_VALID_TRANSACTIONS,
    ChainManager,
)
from cleancoin.components.node.mining import create_coinbase, solve
from cleancoin.components.node.storage import StorageError, chainwork_to_bytes, encode_undo

from test_chain import KEY_A, KEY_B, NOW, P, PKH_A, PKH_B, branch, cb_out, extend, make_block, open_chain, spend

STORED = BLOCK_HAVE_DATA | BLOCK_VALID_TRANSACTIONS


def plant(path: Path, block: Block, height: int, chainwork: int, status: int = STORED,
          tip: bool = False) -> None:
    """Write `block` into the database as the chain manager stores one, with the height,
    chain work and status the attacker chooses, in one transaction."""
    db = sqlite3.connect(path / "chain.sqlite", isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM block_index").fetchone()[0]
        db.execute("INSERT INTO block_index (hash, prev, height, header, chainwork, status, seq) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (block.hash, block.header.prev_hash, height, block.header.serialized,
                    chainwork_to_bytes(chainwork), status, seq))
        db.execute("INSERT INTO blocks (hash, data) VALUES (?, ?)", (block.hash, block.serialized))
        if tip:
            db.execute("UPDATE meta SET value = ? WHERE key = 'tip'", (block.hash,))
        db.execute("COMMIT")
    finally:
        db.close()


def without_proof_of_work(block: Block) -> Block:
    """`block` with the first nonce whose hash misses its target (on regtest about every
    second one does)."""
    header = block.header
    for nonce in range(1, 1000):
        candidate = replace(header, nonce=header.nonce + nonce)
        if not check_proof_of_work(candidate.hash, candidate.bits, P):
            return replace(block, header=candidate)
    raise AssertionError("every nonce met the target")


def test_a_planted_block_without_proof_of_work_is_not_connected_at_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A block extending the tip, stored with honest chain work and valid transactions but
    no proof of work: before, the next start connected it as the new tip."""
    cm = open_chain(tmp_path)
    extend(cm, 5)
    tip = cm.tip
    fake = without_proof_of_work(make_block(cm))
    cm.close()
    plant(tmp_path, fake, tip.height + 1, tip.chainwork + block_proof(fake.header.bits))
    with caplog.at_level(logging.WARNING), open_chain(tmp_path) as again:
        assert again.tip == tip
        entry = again.get_index(fake.hash)
        assert entry is not None and entry.status & BLOCK_FAILED
        # An honest block on the same parent is still accepted and becomes the tip.
        assert again.accept_block(make_block(again)).new_tip
    assert f"{fake.hash_hex} fails its header checks (high-hash" in caplog.text
    with open_chain(tmp_path) as third:            # the mark was stored: no second warning
        entry = third.get_index(fake.hash)
        assert entry is not None and entry.status & BLOCK_FAILED


def test_stored_chain_work_is_computed_again_not_believed(tmp_path: Path) -> None:
    """One valid block forking five below the tip, stored with a made-up chain work of 2**200:
    before, the next start reorganised to it (the tip fell from height 8 to 4)."""
    cm = open_chain(tmp_path)
    extend(cm, 8)
    tip = cm.tip
    fork = cm.block_at_height(3)
    assert fork is not None
    (side,) = branch(cm, fork, 1)
    cm.close()
    plant(tmp_path, side, fork.height + 1, 2 ** 200)
    with open_chain(tmp_path) as again:
        assert again.tip == tip
        entry = again.get_index(side.hash)
        assert entry is not None and not entry.status & (BLOCK_FAILED | BLOCK_FAILED_CHILD)
        assert entry.chainwork == fork.chainwork + block_proof(side.header.bits)
        assert entry.height == fork.height + 1


def test_a_stored_height_is_computed_again(tmp_path: Path) -> None:
    """A valid side block stored at a made-up height is placed where its parent says."""
    cm = open_chain(tmp_path)
    extend(cm, 4)
    fork = cm.block_at_height(2)
    assert fork is not None
    (side,) = branch(cm, fork, 1)
    cm.close()
    plant(tmp_path, side, 1000, fork.chainwork + block_proof(side.header.bits))
    with open_chain(tmp_path) as again:
        entry = again.get_index(side.hash)
        assert entry is not None and entry.height == 3
        assert again.height == 4


def test_difficulty_bits_the_rules_do_not_ask_for_are_refused(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A header that meets the target of bits it chose itself. Regtest never retargets, so a
    block must carry its parent's bits; this one claims a 128 times harder target (and 128
    times the work), which a few hundred hashes meet. On main, the same check refuses the
    easier bits that would make a fake chain cheap."""
    cm = open_chain(tmp_path)
    extend(cm, 3)
    tip = cm.tip
    harder = make_block(cm)
    harder = solve(replace(harder, header=replace(harder.header, bits=0x2000FFFF, nonce=0)), P)
    assert harder is not None and check_proof_of_work(harder.hash, harder.header.bits, P)
    cm.close()
    plant(tmp_path, harder, tip.height + 1, tip.chainwork + block_proof(harder.header.bits))
    with caplog.at_level(logging.WARNING), open_chain(tmp_path) as again:
        assert again.tip == tip
        entry = again.get_index(harder.hash)
        assert entry is not None and entry.status & BLOCK_FAILED
    assert "bad-diffbits" in caplog.text


def test_an_active_chain_that_fails_the_checks_needs_a_reindex(tmp_path: Path) -> None:
    """The planted block made the stored tip (as if connected): the chain state now holds what
    that block did, so it cannot be trusted. The start stops and names the block and the
    remedy; with -reindex the chain state is rebuilt from the blocks that pass."""
    cm = open_chain(tmp_path)
    extend(cm, 5)
    tip, stats = cm.tip, cm.utxo_stats()
    fake = without_proof_of_work(make_block(cm))
    cm.close()
    plant(tmp_path, fake, tip.height + 1, tip.chainwork + block_proof(fake.header.bits),
          status=STORED | BLOCK_VALID_SCRIPTS, tip=True)
    with pytest.raises(StorageError) as refused:
        open_chain(tmp_path)
    text = str(refused.value)
    assert fake.hash_hex in text and "high-hash" in text and "-reindex" in text, text
    again = open_chain(tmp_path, for_reindex=True)
    try:
        again.reindex()
        assert again.tip == tip
        assert again.utxo_stats() == stats
    finally:
        again.close()
    with open_chain(tmp_path) as third:
        assert third.tip == tip


def test_an_honest_database_loads_without_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The checks pass on what the manager itself wrote, side branches and failed blocks
    included (nothing is marked, nothing is logged above INFO)."""
    cm = open_chain(tmp_path)
    extend(cm, 6)
    fork = cm.block_at_height(4)
    assert fork is not None
    for b in branch(cm, fork, 1):
        cm.accept_block(b)
    tip, tips = cm.tip, cm.chain_tips()
    cm.close()
    with caplog.at_level(logging.WARNING), ChainManager(P, str(tmp_path / "chain.sqlite"), now=lambda: NOW) as again:
        assert again.tip == tip and again.chain_tips() == tips
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def swap_transactions(block: Block, height: int, payee: bytes) -> Block:
    """The same header over other valid transactions: a coinbase paying `payee`."""
    return Block(block.header, (create_coinbase(height, payee, block.txs[0].vout[0].value),))


def test_a_stored_block_whose_transactions_were_swapped_is_dropped_not_connected(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The header of a real block over transactions of the attacker's choosing (its block hash
    is the header's, so reading it back matched): before, the next start connected it, and the
    wallet of CleanCoind saw what those transactions paid. Now the merkle root is checked
    again before a stored block is connected: the bytes are dropped and the real block, when
    it comes, is stored and connected."""
    cm = open_chain(tmp_path)
    extend(cm, 5)
    tip = cm.tip
    real = make_block(cm)
    cm.close()
    swapped = swap_transactions(real, tip.height + 1, PKH_B)
    assert swapped.hash == real.hash and swapped.serialized != real.serialized
    plant(tmp_path, swapped, tip.height + 1, tip.chainwork + block_proof(real.header.bits))
    with caplog.at_level(logging.WARNING), open_chain(tmp_path) as again:
        assert again.tip == tip
        entry = again.get_index(real.hash)
        assert entry is not None and not entry.status & (BLOCK_HAVE_DATA | BLOCK_FAILED)
        assert again.get_block(real.hash) is None
        assert again.accept_block(real).new_tip
        assert again.get_block(real.hash) == real
    assert f"stored block {real.hash_hex} at height 6 is not the block of its header (bad-txnmrklroot" in caplog.text


def test_reindex_drops_a_connected_block_whose_transactions_were_swapped(tmp_path: Path) -> None:
    """Swapped after it was connected: -reindex reads every block again and stops the chain
    below the one whose bytes are not its header's, instead of connecting the swap."""
    cm = open_chain(tmp_path)
    blocks = extend(cm, 6)
    cm.close()
    swapped = swap_transactions(blocks[-1], 6, PKH_B)
    db = sqlite3.connect(tmp_path / "chain.sqlite", isolation_level=None)
    db.execute("UPDATE blocks SET data = ? WHERE hash = ?", (swapped.serialized, swapped.hash))
    db.close()
    again = open_chain(tmp_path, for_reindex=True)
    try:
        again.reindex()
        assert again.height == 5
        assert again.accept_block(blocks[-1]).new_tip and again.height == 6
    finally:
        again.close()


# ------------------------------------------------------------------------------- verifychain

def spent_chain(path: Path) -> tuple[ChainManager, Transaction]:
    """101 blocks, then one spending the first coinbase (the spend pays PKH_B and change to
    PKH_A) and, in the same block, PKH_B's output again; then three more: the last six blocks
    hold spends with their undo data, one of them of a coin that never reached the set."""
    cm = open_chain(path)
    blocks = extend(cm, 101)
    pay = spend([cb_out(blocks[0])], [(20 * COIN, PKH_B), (29 * COIN, PKH_A)], [KEY_A])
    again = spend([OutPoint(pay.txid, 0)], [(19 * COIN, PKH_A)], [KEY_B])
    assert cm.accept_block(make_block(cm, txs=[pay, again], fees=2 * COIN)).new_tip
    extend(cm, 3)
    return cm, pay


def sql(path: Path, statement: str, *params: object) -> None:
    db = sqlite3.connect(path / "chain.sqlite", isolation_level=None)
    try:
        assert db.execute(statement, params).rowcount == 1
    finally:
        db.close()


def test_verifychain_passes_an_honest_chain_at_every_level(tmp_path: Path) -> None:
    cm, _ = spent_chain(tmp_path)
    try:
        for level in range(5):
            for nblocks in (6, 0):
                result = cm.verify_chain(level, nblocks)
                assert result.ok, (level, nblocks, result.problem)
                assert result.checked == (6 if nblocks else cm.height)
        assert cm.verify_chain(9, 2).level == 4          # clamped, as bitcoind clamps it
    finally:
        cm.close()


@pytest.mark.parametrize(("change", "fails_at", "says"), [
    # A coin the spend created, gone from the UTXO set.
    ("DELETE FROM utxo WHERE txid = ? AND n = 1", 3, "lacks output"),
    # The same coin, worth more.
    ("UPDATE utxo SET value = value * 2 WHERE txid = ? AND n = 1", 3, "holds another coin"),
    # The spend's undo data, gone.
    ("DELETE FROM undo WHERE hash = (SELECT block FROM tx_index WHERE txid = ?)", 2, "undo data is missing"),
])
def test_verifychain_finds_what_was_changed_under_the_chain(tmp_path: Path, change: str, fails_at: int,
                                                            says: str) -> None:
    """Each change fails at its level and not below: the levels are what they say."""
    cm, pay = spent_chain(tmp_path)
    cm.close()
    sql(tmp_path, change, pay.txid)
    with open_chain(tmp_path) as again:
        assert again.verify_chain(fails_at - 1, 6).ok
        result = again.verify_chain(fails_at, 6)
        assert not result.ok and says in (result.problem or ""), result
        assert again.verify_chain(fails_at, 2).ok           # the spend lies deeper than two blocks


def test_verifychain_finds_a_spent_coin_put_back_and_swapped_bytes(tmp_path: Path) -> None:
    cm, pay = spent_chain(tmp_path)
    spent_coin = cm.get_undo(cm.block_at_height(102).hash)    # type: ignore[union-attr]
    tip = cm.tip
    tip_block = cm.get_block(tip.hash)
    cm.close()
    assert spent_coin is not None and tip_block is not None
    (outpoint, coin), = spent_coin
    db = sqlite3.connect(tmp_path / "chain.sqlite", isolation_level=None)
    db.execute("INSERT INTO utxo VALUES (?, ?, ?, ?, ?, ?)",
               (outpoint.txid, outpoint.n, coin.value, coin.pkh, coin.height, int(coin.is_coinbase)))
    db.close()
    with open_chain(tmp_path) as again:
        # The coinbase of block 1 is below six blocks; all of them reach it.
        assert again.verify_chain(3, 6).ok
        result = again.verify_chain(3, 0)
        assert not result.ok and "still holds" in (result.problem or ""), result
    sql(tmp_path, "UPDATE blocks SET data = ? WHERE hash = ?",
        swap_transactions(tip_block, tip.height, PKH_B).serialized, tip.hash)
    with open_chain(tmp_path) as again:
        assert again.verify_chain(0, 1).ok
        result = again.verify_chain(1, 1)
        assert not result.ok and "bad-txnmrklroot" in (result.problem or ""), result


def test_verifychain_level_4_connects_the_blocks_again(tmp_path: Path) -> None:
    """Undo data naming another payee for the coin the spend took: the coins in the UTXO set
    are right (level 3 passes), but connected again on the rewound state the spend's signature
    does not match that payee."""
    cm, pay = spent_chain(tmp_path)
    spend_block = cm.block_at_height(102)
    assert spend_block is not None
    (outpoint, coin), = cm.get_undo(spend_block.hash) or ()
    cm.close()
    forged = encode_undo([(outpoint, replace(coin, pkh=PKH_B))])
    sql(tmp_path, "UPDATE undo SET data = ? WHERE hash = ?", forged, spend_block.hash)
    with open_chain(tmp_path) as again:
        assert again.verify_chain(3, 6).ok
        result = again.verify_chain(4, 6)
        assert not result.ok and "does not connect again" in (result.problem or ""), result


def test_verifychain_of_every_block_finds_a_coin_no_block_created(tmp_path: Path) -> None:
    """A coin written straight into the UTXO set, paying the attacker: no block's check sees
    it, but over the whole chain the set must hold what the blocks leave, no more."""
    cm, _ = spent_chain(tmp_path)
    cm.close()
    sql(tmp_path, "INSERT INTO utxo VALUES (?, 0, ?, ?, 50, 0)", bytes(range(32)), 1000 * COIN, PKH_B)
    with open_chain(tmp_path) as again:
        assert again.verify_chain(4, 6).ok
        assert again.verify_chain(2, 0).ok
        result = again.verify_chain(3, 0)
        assert not result.ok and "coins no block created" in (result.problem or ""), result


def test_a_stored_block_whose_bytes_changed_is_not_served(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What a peer's getdata is served (get_block_raw, the stored bytes as they are): since
    12-07 checked against the CRC-32 stored with them. Block 1's body changed under its intact
    header (one byte of its coinbase): None, logged once, where before it went out as it was
    and every peer that asked banned us. Blocks 2 and 3 stored before 12-07 (no CRC-32):
    checked once by their merkle root, block 2's intact bytes served and their CRC-32 stored,
    block 3's changed ones refused. Block 4 is served as it is."""
    cm = open_chain(tmp_path)
    blocks = extend(cm, 4)
    cm.close()
    for b in blocks[:3:2]:
        changed = bytearray(b.serialized)
        changed[-10] ^= 1
        sql(tmp_path, "UPDATE blocks SET data = ? WHERE hash = ?", bytes(changed), b.hash)
    for b in blocks[1:3]:
        sql(tmp_path, "DELETE FROM block_sums WHERE hash = ?", b.hash)
    cm = open_chain(tmp_path)
    try:
        with caplog.at_level(logging.ERROR, logger="cleancoin"):
            assert cm.get_block_raw(blocks[0].hash) is None
            assert cm.get_block_raw(blocks[0].hash) is None
            assert cm.get_block_raw(blocks[1].hash) == blocks[1].serialized
            assert cm.get_block_raw(blocks[2].hash) is None
            assert cm.get_block_raw(blocks[3].hash) == blocks[3].serialized
        corrupt = [r.getMessage() for r in caplog.records if "is corrupt" in r.getMessage()]
        assert len(corrupt) == 2 and "CRC-32" in corrupt[0] and "merkle root" in corrupt[1], corrupt
    finally:
        cm.close()
    db = sqlite3.connect(tmp_path / "chain.sqlite")
    try:
        assert db.execute("SELECT COUNT(*) FROM block_sums WHERE hash IN (?, ?)",
                          (blocks[1].hash, blocks[2].hash)).fetchone() == (1,)
    finally:
        db.close()
