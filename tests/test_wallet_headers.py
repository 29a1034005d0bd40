"""The wallet's own header chain (components/wallet/headers.py): every block the node hands the
wallet is checked (proof of work, difficulty rule, time, merkle root, linkage), the checked
headers are stored in the wallet file (schema version 2, upgraded from version 1 files), and a
reorganisation must lead to a branch with more work.

The compromised node is a real NodeChain over a real chain, with some answers replaced by the
attacker's, served to the wallet over real Cap'n Proto where the wallet's side matters
(tests/functional/test_wallet_fake_chain.py runs the same attack inside a confined node).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import capnp
import pytest

from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.pow import PrevBlock, block_proof, next_work_required
from cleancoin.components.common.primitives import (
    Block, BlockHeader, OutPoint, Transaction, TxIn, TxOut,
)
from cleancoin.components.interfaces.chain import BlockInfo
from cleancoin.components.node.chain_binding import NodeChain
from cleancoin.components.node.mining import mine_block, solve
from cleancoin.components.wallet.headers import BlockRefused, GenesisCheck, HeaderChain
from cleancoin.components.wallet.store import DB_FILENAME, SCHEMA_VERSION, WalletStore, wallet_dir
from cleancoin.components.interfaces.chain import RpcRequest
from cleancoin.components.rpc.carried import execute_request
from cleancoin.components.rpc.registry import Registry
from cleancoin.components.wallet.rpc import register_wallet_methods
from cleancoin.components.wallet.wallet import Wallet, WalletError, WalletManager
from test_wallet import OTHER, Env, _over_ipc, env  # noqa: F401 - a fixture
from wallet_v1 import make_v1_wallet

P = REGTEST
COIN = 100_000_000

def _fake_payment(pkh: bytes) -> Transaction:
    """1000 coins to `pkh` from an output that never existed (no node would take it)."""
    return Transaction(1, (TxIn(OutPoint(os.urandom(32), 0), b"\x00" * 100),), (TxOut(1000 * COIN, pkh),), 0)


def test_a_version_1_wallet_opens_is_upgraded_and_anchors_once(env: Env, caplog) -> None:
    """A wallet file from before the header chain (made with version 1's schema, synced to
    height 3) opens: upgraded to version 2 in place, accepted by the schema check, and its
    best block becomes the anchor (taken from the node once); a restart reads the stored
    headers and takes nothing on trust again."""
    blocks = env.mine(5)
    path = make_v1_wallet(env.path, "old", P.name, (blocks[2].hash, 3))

    async def scenario() -> None:
        with caplog.at_level(logging.INFO, logger="cleancoin.wallet"):
            w = Wallet("old", WalletStore.open(env.path, "old", P.name), env.chain)
            await w.load()
            assert w.store._meta("version") == SCHEMA_VERSION == 2
            assert w.store.best_block == (blocks[4].hash, 5)
            rows = w.store.headers(0, 10)
            assert sorted(rows) == [0, 1, 2, 3, 4, 5]
            assert [rows[h][2] for h in range(6)] == [False, True, True, True, False, False]
            assert w.store.check() == []
            await w.close()
        assert sum("anchored at block 3" in r.getMessage() for r in caplog.records) == 1
        caplog.clear()
        env.mine(1)
        with caplog.at_level(logging.INFO, logger="cleancoin.wallet"):
            w = Wallet("old", WalletStore.open(env.path, "old", P.name), env.chain)
            await w.load()
            assert w.store.best_block[1] == 6 and sorted(w.store.headers(0, 10)) == list(range(7))
            await w.close()
        assert not any("anchored" in r.getMessage() for r in caplog.records)

    asyncio.run(scenario())
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone() == (2,)
    conn.close()


@pytest.mark.parametrize("planted", [
    "DROP TABLE headers; CREATE TABLE headers (height INTEGER PRIMARY KEY, hash BLOB NOT NULL, "
    "header BLOB NOT NULL, trusted INTEGER NOT NULL DEFAULT (load_extension('x')))",
    "CREATE TRIGGER t AFTER INSERT ON headers BEGIN DELETE FROM keys; END",
], ids=["changed-headers-table", "trigger-on-headers"])
def test_the_schema_check_knows_the_headers_table(tmp_path: Path, planted: str) -> None:
    """The new table is one of the wallet's: as created it passes the schema check; changed,
    or with a trigger on it, the file is refused before any statement runs."""
    WalletStore.create(tmp_path, "w", P.name).close()
    WalletStore.open(tmp_path, "w", P.name).close()
    conn = sqlite3.connect(wallet_dir(tmp_path, "w") / DB_FILENAME)
    conn.executescript(planted)
    conn.close()
    with pytest.raises(WalletError, match="holds SQL this program did not put there"):
        WalletStore.open(tmp_path, "w", P.name)


class BranchBlocks(NodeChain):
    """The node's Chain serving, when `branch` is set (a list of blocks on top of the active
    block at `fork`), that branch's blocks as the active chain's above `fork`; the rest is the
    real chain's (test_wallet_anchor's attacks build on it too)."""

    def __init__(self, env: Env, fork: int = 0) -> None:
        super().__init__(env.cm, env.mempool)
        self.fork = fork
        self.branch: list[Block] = []

    async def get_height(self) -> int:
        return self.fork + len(self.branch) if self.branch else await super().get_height()

    async def get_blocks(self, start_height: int, count: int) -> list[bytes]:
        if not self.branch or start_height <= self.fork:
            return await super().get_blocks(start_height, min(count, self.fork + 1 - start_height)
                                            if self.branch else count)
        return [b.to_bytes() for b in self.branch[start_height - self.fork - 1:][:count]]


class LyingChain(BranchBlocks):
    """A short branch of the attacker's (BranchBlocks) told as the active chain: when `branch`
    is set, the wallet's best block is said to have left the active chain."""

    async def get_block_header_info(self, block_hash: bytes) -> BlockInfo:
        info = await super().get_block_header_info(block_hash)
        if self.branch and info.height > self.fork:
            return dataclasses.replace(info, in_active_chain=False)
        return info

    async def find_fork(self, locator: list[bytes]) -> int:
        return self.fork if self.branch else await super().find_fork(locator)


def test_a_reorganisation_to_less_work_is_refused_also_after_a_restart(env: Env, caplog) -> None:
    """The node says the wallet's two newest blocks left the active chain for a one-block
    branch paying the wallet 1000 coins, with valid proof of work (free on regtest): less
    work than the wallet's branch, refused (before the headers, the wallet unwound and took
    it). After a restart the stored headers still say so; an honest longer branch is taken,
    and so is a rewind (invalidateblock)."""
    lying = LyingChain(env)

    async def use(init: Any) -> None:
        chain = await init.make_chain()
        store = WalletStore.create(env.path, "w", P.name)
        w = Wallet("w", store, chain)
        pkh = w.new_key(False).pkh
        env.mine(3, pkh)
        await w.load()
        fork = env.cm.block_at_height(1)
        assert fork is not None and w.store.best_block[1] == 3
        fake = mine_block(fork.header, 2, pkh, P, fork.header.time + 1, fork.header.bits,
                          (_fake_payment(pkh),))
        lying.fork, lying.branch = 1, [fake]
        with caplog.at_level(logging.WARNING, logger="cleancoin.wallet"):
            assert await w.sync() == 0
            assert w.store.best_block[1] == 3 and w.store.get_transaction(fake.txs[1].txid) is None
            await w.close()
            # Restarted, the wallet knows its branch's work from its own file.
            w = Wallet("w", WalletStore.open(env.path, "w", P.name), chain)
            await w.load()
            assert w.store.best_block[1] == 3 and w.store.get_transaction(fake.txs[1].txid) is None
        refusals = [r.getMessage() for r in caplog.records if "refused block" in r.getMessage()]
        assert refusals and all("less-work" in m for m in refusals), refusals
        # The node stops lying and its chain really reorganises to a longer branch: followed.
        lying.branch = []
        env.mine(3, OTHER, parent=fork)
        await w.sync()
        assert w.store.best_block == (env.cm.tip.hash, 4)
        assert sorted(w.store.headers(0, 10)) == [0, 1, 2, 3, 4]
        # A rewind (invalidateblock: the node's chain ends below the wallet's best block) is
        # followed: it takes confirmations away and adds none, like withheld blocks; the
        # undone blocks' rows stay, without their block, as the bar for what comes next.
        # (Block 1 is below both branches: the node's chain ends at genesis.)
        env.cm.invalidate_block(fork.hash)
        await w.sync()
        rows = w.store.headers(0, 10)
        assert w.store.best_block == (P.genesis_hash, 0) and sorted(rows) == [0, 1, 2, 3, 4]
        assert all(rows[h][2] for h in (1, 2, 3, 4))
        assert w.store.check() == []
        # A branch of less work than those rows (3 blocks against 4) is not taken: the
        # wallet waits; one more block outweighs them and is followed.
        env.mine(3, OTHER, parent=env.cm.get_index(P.genesis_hash))
        await w.sync()
        assert w.store.best_block == (P.genesis_hash, 0) and w.anchor_info()["reason"] == "less-work"
        env.mine(2, OTHER)
        await w.sync()
        assert w.store.best_block == (env.cm.tip.hash, 5) and w.anchor_info()["status"] == "anchored"
        rows = w.store.headers(0, 10)
        assert sorted(rows) == [0, 1, 2, 3, 4, 5] and not any(rows[h][2] for h in range(1, 6))
        assert w.store.check() == []
        await w.close()

    asyncio.run(capnp.run(asyncio.wait_for(_over_ipc_with(env, lying, use), 60)))


async def _over_ipc_with(env: Env, chain: NodeChain, use):
    saved = env.chain
    env.chain = chain
    try:
        return await _over_ipc(env, use)
    finally:
        env.chain = saved


def _retargeting() -> Any:
    """Regtest with a difficulty period of 4 blocks, BIP94 on (genesis unchanged)."""
    return dataclasses.replace(REGTEST, pow_no_retargeting=False, retarget_interval=4, enforce_bip94=True)


def _grow(store: WalletStore, params: Any, n: int, spacing: int) -> list[Block]:
    """n blocks on genesis, each `spacing` seconds after its parent and at the bits the rule
    demands, checked and stored as the wallet stores them."""
    hc = HeaderChain(store, params)
    blocks = [params.genesis_block]
    hc.check(blocks[0], 0)
    store.apply_block(blocks[0].hash, 0, blocks[0].txs, blocks[0].header.time, blocks[0].header.serialized)
    for height in range(1, n + 1):
        prev = blocks[-1].header
        bits = next_work_required(PrevBlock(height - 1, prev.bits, prev.time), params,
                                  lambda h: blocks[h].header.time)
        block = mine_block(prev, height, OTHER, params, prev.time + spacing, bits)
        hc.check(block, height)
        store.apply_block(block.hash, height, block.txs, block.header.time, block.header.serialized)
        blocks.append(block)
    return blocks


def _resolve(header: BlockHeader, block: Block, params: Any, meets: bool = True) -> Block:
    """`block` with `header` (nonce searched until its proof of work does, or does not, meet
    its bits)."""
    if meets:
        solved = solve(Block(header, block.txs), params, 1 << 24)
        assert solved is not None
        return solved
    for nonce in range(1 << 16):
        candidate = Block(dataclasses.replace(header, nonce=nonce), block.txs)
        if int.from_bytes(candidate.hash, "little") > (1 << 255) - 1:
            return candidate
    raise AssertionError("no high hash found")


def test_each_forgery_is_refused_with_its_reason(tmp_path: Path) -> None:
    """Against a stored chain of 7 blocks on a network that retargets every 4 (blocks one
    second apart, so block 8 must be 4 times harder): the honest block 8 is accepted; a
    hash above its target, the old (easier) bits, a time at or below the median of the last
    eleven, a time too far ahead of the wallet's clock, transactions other than the header
    commits to, and a parent other than the wallet's block are each refused."""
    params = _retargeting()
    store = WalletStore.create(tmp_path, "w", P.name)
    blocks = _grow(store, params, 7, 1)
    hc = HeaderChain(store, params)
    tip = blocks[-1].header
    bits = next_work_required(PrevBlock(7, tip.bits, tip.time), params, lambda h: blocks[h].header.time)
    assert bits != tip.bits                                  # the rule moved at height 8
    honest = mine_block(tip, 8, OTHER, params, tip.time + 1, bits)
    hc.check(honest, 8)
    h = honest.header
    forgeries = {
        "high-hash": _resolve(h, honest, params, meets=False),
        "bad-diffbits": _resolve(dataclasses.replace(h, bits=tip.bits), honest, params),
        "time-too-old": _resolve(dataclasses.replace(h, time=blocks[4].header.time), honest, params),
        "time-too-new": _resolve(dataclasses.replace(h, time=int(hc._clock()) + 3 * 3600), honest, params),
        "bad-txnmrklroot": Block(h, (honest.txs[0], _fake_payment(OTHER))),
        "bad-prevblk": mine_block(blocks[6].header, 8, OTHER, params, tip.time + 1, bits),
    }
    for reason, forged in forgeries.items():
        with pytest.raises(BlockRefused) as refused:
            hc.check(forged, 8)
        assert refused.value.reason == reason, (reason, refused.value)
    # The time-warp rule (BIP94): the first block of a period at most 600 s before its parent.
    store.apply_block(honest.hash, 8, honest.txs, h.time, h.serialized)
    more = blocks + [honest]
    for height in (9, 10, 11):
        prev = more[-1].header
        block = mine_block(prev, height, OTHER, params, prev.time + 5000, prev.bits)
        hc.check(block, height)
        store.apply_block(block.hash, height, block.txs, block.header.time, block.header.serialized)
        more.append(block)
    prev = more[-1].header
    bits = next_work_required(PrevBlock(11, prev.bits, prev.time), params, lambda x: more[x].header.time)
    warped = mine_block(prev, 12, OTHER, params, prev.time - 601, bits)
    with pytest.raises(BlockRefused, match="time-timewarp-attack"):
        hc.check(warped, 12)
    hc.check(mine_block(prev, 12, OTHER, params, prev.time - 600, bits), 12)
    store.close()


def test_a_check_resumed_at_the_best_block_is_the_check_from_genesis(tmp_path: Path) -> None:
    """Since 12-07 the check after a disconnect resumes at the wallet's best block, from its
    rows and its `checked_work` (kept by each block connected and disconnected). On a network
    that retargets every 4 blocks: a check resumed at 9 holds what a check from genesis holds
    there (work, median-time window, period), takes the next honest headers across a retarget
    to the same work, and refuses the easier bits at 12 with the same reason. A disconnect
    with the node's word for the parent not the header's own goes to the header's own parent
    (since 12-07: before, the node's word, and the work was then unknown), so the work and
    the resumed check stay."""
    params = _retargeting()
    store = WalletStore.create(tmp_path, "w", P.name)
    store.add_headers([], checked_chain=True, checked_work=(-1, bytes(32), 0))
    blocks = _grow(store, params, 10, 1)
    store.disconnect_block(blocks[10].hash, 10, blocks[9].hash)
    hc = HeaderChain(store, params)
    resumed = hc.resumed_check(9, hc.anchor_keep(9))
    full = GenesisCheck(params, hc.anchor_keep(9), 10)
    full.feed(b"".join(b.header.serialized for b in blocks[:10]))
    assert resumed is not None and resumed.begin == 9
    for name in ("height", "last", "work", "work_below", "times", "period_start", "kept"):
        assert getattr(resumed, name) == getattr(full, name), name
    more = blocks[:10]
    for height in (10, 11, 12, 13):
        prev = more[-1].header
        bits = next_work_required(PrevBlock(height - 1, prev.bits, prev.time), params, lambda h: more[h].header.time)
        more.append(mine_block(prev, height, OTHER, params, prev.time + 1, bits))
    assert more[12].header.bits != more[11].header.bits           # the rule moved at 12
    for check in (resumed, full):
        check.feed(b"".join(b.header.serialized for b in more[10:]))
    assert resumed.work == full.work and resumed.last == full.last == more[13].header
    easier = _resolve(dataclasses.replace(more[12].header, bits=more[11].header.bits), more[12], params)
    for check in (hc.resumed_check(9, hc.anchor_keep(9)), GenesisCheck(params, frozenset(), 10)):
        assert check is not None
        if check.height < 9:
            check.feed(b"".join(b.header.serialized for b in blocks[:10]))
        check.feed(b"".join(b.header.serialized for b in more[10:12]))
        with pytest.raises(BlockRefused, match="bad-diffbits"):
            check.feed(easier.header.serialized)
    store.disconnect_block(blocks[9].hash, 9, os.urandom(32))
    assert store.best_block == (blocks[8].hash, 8)
    assert store.checked_work == (8, blocks[8].hash, full.work_below - block_proof(blocks[9].header.bits))
    assert hc.resumed_check(8, hc.anchor_keep(8)) is not None
    store.close()


class SwappingChain(NodeChain):
    """The node's Chain, except that below `below` it serves blocks of another chain."""

    def __init__(self, env: Env, other: dict[int, Block]) -> None:
        super().__init__(env.cm, env.mempool)
        self.other = other
        self.swap = False

    async def get_blocks(self, start_height: int, count: int) -> list[bytes]:
        out = await super().get_blocks(start_height, count)
        if self.swap:
            out = [self.other[start_height + i].to_bytes() if start_height + i in self.other else raw
                   for i, raw in enumerate(out)]
        return out


def test_a_rescan_below_the_anchor_follows_hashes_and_refuses_another_chain(env: Env) -> None:
    """A wallet born at height 30 holds headers from 19 on (the anchor: 29 and the ten before). rescanblockchain from
    0 first extends the header chain down by hash, then reads blocks that match it; a node
    that serves a different block at 10 (paying the wallet) gets the rescan refused."""
    env.mine(30)
    store = WalletStore.create(env.path, "w", P.name, birth_height=30)
    pkh = Wallet("tmp", store, env.chain).new_key(False).pkh
    parent = env.cm.block_at_height(9)
    assert parent is not None
    other = mine_block(parent.header, 10, pkh, P, parent.header.time + 1, parent.header.bits)
    swapping = SwappingChain(env, {10: other})

    async def scenario() -> None:
        w = Wallet("w", store, swapping)
        await w.load()
        assert w.store.linked_from() == 19 and w.store.best_block[1] == 30
        swapping.swap = True
        with pytest.raises(WalletError, match="Rescan stopped at height 10"):
            await w.rescan(0)
        assert w.store.get_transaction(other.txs[0].txid) is None
        # Through RPC: a clear error, no traceback, nothing recorded.
        loader = WalletManager(env.path, swapping, P.name)
        loader.wallets["w"] = w
        registry = Registry()
        register_wallet_methods(registry, loader)
        response = await execute_request(registry, RpcRequest("rescanblockchain", "[0]", "w"))
        assert (response.ok, response.error_code) == (False, -1), response
        assert response.error_message == ("Rescan stopped at height 10: the node's block there was "
                                          "refused (bad-prevblk)")
        assert w.store.get_transaction(other.txs[0].txid) is None
        swapping.swap = False
        assert await w.rescan(0) == (0, 30)
        assert w.store.linked_from() == 0 and len(w.store.headers(0, 30)) == 31
        assert w.store.check() == []
        await w.close()

    asyncio.run(scenario())


def test_a_fork_below_the_wallets_headers_is_refused(env: Env, caplog) -> None:
    """A wallet born at 30 holds headers from 19 on. A node that says its best block left
    the active chain for a branch forking at 10, below them (valid regtest proof of work, more
    blocks than the wallet's above 10), is refused: the wallet cannot weigh its own blocks
    there."""
    env.mine(32)
    store = WalletStore.create(env.path, "w", P.name, birth_height=30)
    lying = LyingChain(env)

    async def scenario() -> None:
        w = Wallet("w", store, lying)
        pkh = w.new_key(False).pkh
        await w.load()
        assert w.store.best_block[1] == 32
        parent = env.cm.block_at_height(10)
        assert parent is not None
        branch = []
        prev = parent.header
        for height in range(11, 11 + 25):
            block = mine_block(prev, height, pkh, P, prev.time + 1, prev.bits)
            branch.append(block)
            prev = block.header
        lying.fork, lying.branch = 10, branch
        with caplog.at_level(logging.WARNING, logger="cleancoin.wallet"):
            assert await w.sync() == 0
        assert w.store.best_block[1] == 32
        assert any("fork-below-header-chain" in r.getMessage() for r in caplog.records)
        await w.close()

    asyncio.run(scenario())


class GarblingChain(NodeChain):
    """The node's Chain, with bytes that are no block at all one above its tip."""

    def __init__(self, env: Env) -> None:
        super().__init__(env.cm, env.mempool)
        self.garble = False

    async def get_height(self) -> int:
        return await super().get_height() + int(self.garble)

    async def get_blocks(self, start_height: int, count: int) -> list[bytes]:
        out = await super().get_blocks(start_height, count)
        if self.garble and len(out) < count:
            out.append(b"\x01\x00\x00\x00" + b"\xff" * 100)
        return out


def test_bytes_that_are_no_block_are_refused_and_the_wallet_goes_on(env: Env, caplog) -> None:
    """A block that does not even parse is refused like any other (logged, not counted), and
    raises nothing into the notification that brought it; the next good block is taken."""
    garbling = GarblingChain(env)

    async def scenario() -> None:
        w = Wallet("w", WalletStore.create(env.path, "w", P.name), garbling)
        env.mine(2)
        await w.load()
        garbling.garble = True
        with caplog.at_level(logging.WARNING, logger="cleancoin.wallet"):
            assert await w.sync() == 0
        assert w.store.best_block[1] == 2
        assert any("refused block 3" in r.getMessage() and "bad-block-encoding" in r.getMessage()
                   for r in caplog.records)
        garbling.garble = False
        env.mine(1)
        await w.sync()
        assert w.store.best_block[1] == 3
        await w.close()

    asyncio.run(scenario())


def test_a_deep_reorganisation_and_rewind_cycles_end_as_a_fresh_wallet_would(env: Env) -> None:
    """An honest node, deeper than any other test: the wallet (born at genesis) at 300 on
    chain A, paid by every 10th block; the node reorganises to a branch B from 40 of 265
    blocks (more work), paid by its first and every 7th: 260 blocks undone, more than a batch
    (200) weighed.
    Then three invalidateblock / reconsiderblock cycles 205 blocks deep (A's first block
    invalidated first, else the node would go back to A, which the wallet refuses: less work
    than its blocks, docs/wallet.md). After each step the
    wallet holds exactly the payments of the node's active chain, its header rows are that
    chain's and its file passes its check; the CPU time of the reorganisation is printed."""
    paid_a = {h for h in range(1, 301) if h % 10 == 0}
    paid_b = {h for h in range(41, 306) if h % 7 == 0 or h == 41}     # (41: B's first is not A's)

    async def scenario() -> None:
        w = Wallet("w", WalletStore.create(env.path, "w", P.name), env.chain)
        pkh = w.new_key(False).pkh
        await w.load()
        for h in range(1, 301):
            env.mine(1, pkh if h in paid_a else OTHER)
        await w.sync()

        def state() -> tuple[int, set[bytes], set[bytes]]:
            active = {env.cm.block_at_height(h).hash: h for h in range(env.cm.height + 1)}
            confirmed = {t.tx.txid for t in w.store.transactions() if t.block_hash is not None}
            for t in w.store.transactions():
                if t.block_hash is not None:
                    assert active.get(t.block_hash) == t.block_height, t.block_height
            rows = w.store.headers(0, env.cm.height + 300)
            assert all(rows[h][0] == block_hash for block_hash, h in active.items() if h <= w.store.best_block[1])
            assert w.store.check() == []
            return w.store.best_block[1], confirmed, {t.tx.txid for t in w.store.transactions() if t.conflicted}

        assert state()[0] == 300 and len(state()[1]) == len(paid_a)
        fork = env.cm.block_at_height(40)
        a41 = env.cm.block_at_height(41).hash
        parent = fork
        for h in range(41, 306):
            parent = env.mine(1, pkh if h in paid_b else OTHER, parent=parent)[-1]
            parent = env.cm.get_index(parent.hash)
        assert env.cm.height == 305
        cpu = time.process_time()
        await w.sync()
        cpu = time.process_time() - cpu
        best, confirmed, conflicted = state()
        print(f"\na reorganisation 260 blocks deep to a branch of 265: {cpu:.2f} s of CPU for the wallet")
        assert best == 305 and len(confirmed) == len({h for h in paid_a if h <= 40} | paid_b)
        # A's coinbases can never confirm (those at heights B pays too are the same transaction)
        assert len(conflicted) == len({h for h in paid_a if h > 40} - paid_b)
        reference = (best, confirmed, conflicted)
        heights = {t.tx.txid: t.block_height for t in w.store.transactions() if t.block_hash is not None}
        env.cm.invalidate_block(a41)         # else the node would go back to A below B's 301
        for _ in range(3):
            stale = env.cm.block_at_height(101).hash
            env.cm.invalidate_block(stale)
            await w.sync()
            assert state()[0] == 100
            assert state()[1] == {c for c in confirmed if heights[c] <= 100}
            env.cm.reconsider_block(stale)
            await w.sync()
            assert state() == reference
        await w.close()

    asyncio.run(scenario())
