"""The wallet's anchor (components/wallet/headers.py, h40): taken only from a header chain the
wallet checked itself from genesis (Chain.get_headers) and whose work reaches the minimum
chain work; the wallet waits otherwise, and no answer of the node's crashes it.

A real ChainManager and NodeChain, the node's answers replaced where the test plays the
compromised node, the wallet over real Cap'n Proto where that matters
(tests/functional/test_wallet_min_chain_work.py runs the attack inside a confined node).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import tracemalloc
from typing import Any

import capnp
import pytest

from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.primitives import BlockHeader, OutPoint, Transaction, TxIn, TxOut
from cleancoin.components.interfaces.chain import MAX_GET_HEADERS, BlockInfo, ChainError
from cleancoin.components.node.chain_binding import NodeChain
from cleancoin.components.node.mining import mine_block
from cleancoin.components.wallet.headers import GenesisCheck
from cleancoin.components.wallet.store import WalletStore
from cleancoin.components.wallet import wallet as wallet_mod
from cleancoin.components.wallet.wallet import Wallet
from test_wallet import Env, _over_ipc, env  # noqa: F401 - a fixture
from test_wallet_headers import BranchBlocks

P = REGTEST


def _wallet(env: Env, chain: Any, name: str, minimum_chain_work: int, birth: int) -> Wallet:
    return Wallet(name, WalletStore.create(env.path, name, P.name, birth_height=birth), chain,
                  minimum_chain_work=minimum_chain_work)


def test_an_anchor_below_the_minimum_chain_work_waits_and_is_taken_once_the_work_is_there(
        env: Env, caplog) -> None:
    """Minimum chain work 40 (height 19 on regtest). The chain at height 10 (work 22): a new
    wallet takes no anchor and no block, says why in `anchor_info` and its log (once); at
    height 25 (work 52) it anchors from the headers it checked (resumed, not read again) and
    catches up."""
    env.mine(10)

    async def scenario() -> None:
        w = _wallet(env, env.chain, "w", 40, birth=10)
        with caplog.at_level(logging.INFO, logger="cleancoin.wallet"):
            await w.load()
            assert w.store.best_block[1] == -1 and w.store.header_count() == 0
            info = w.anchor_info()
            assert info["status"] == "waiting" and info["reason"] == "below-minimum-chain-work", info
            assert info["minimumchainwork"] == f"{40:064x}"
            await w.sync()
            assert w._genesis_check is not None and w._genesis_check.height == 10
            env.mine(15)
            await w.sync()
        assert w.store.best_block[1] == 25
        assert w.anchor_info()["status"] == "anchored"
        rows = w.store.headers(0, 30)
        assert sorted(rows) == list(range(0, 26))
        # genesis needs no trust; 1..9 stored without their blocks; 10.. checked with them
        assert not rows[0][2] and all(rows[h][2] for h in range(1, 10))
        assert not any(rows[h][2] for h in range(10, 26))
        messages = [r.getMessage() for r in caplog.records]
        assert sum("no anchor taken from the node's chain: below-minimum-chain-work" in m for m in messages) == 1
        assert any("anchored at block 9 " in m and "work 0x34" in m for m in messages)
        await w.close()

    asyncio.run(scenario())


def test_a_wallet_born_at_genesis_also_waits_for_the_minimum_chain_work(env: Env) -> None:
    """A wallet born at genesis needs no anchor below its first block, and so checked no
    chain work at all: its first blocks could be any branch the node liked. Now it checks
    the node's chain from genesis first too, and stores it: the blocks it takes must be that
    chain's."""
    env.mine(10)

    async def scenario() -> None:
        w = _wallet(env, env.chain, "g", 40, birth=0)
        await w.load()
        assert w.store.best_block[1] == -1 and w.anchor_info()["reason"] == "below-minimum-chain-work"
        env.mine(15)
        await w.sync()
        assert w.store.best_block[1] == 25 and w.anchor_info()["status"] == "anchored"
        assert not any(t for _, _, t in w.store.headers(0, 30).values())     # all checked with their blocks
        assert w.store.check() == []
        await w.close()

    asyncio.run(scenario())


class BlocksOffTheHeaders(BranchBlocks):
    """The node's Chain whose blocks above `fork` are a branch of the attacker's (`branch`),
    while its headers (unless `headers_too`) and the rest are the real chain's."""

    headers_too = False

    async def get_headers(self, start_height: int, count: int) -> bytes:
        if not (self.headers_too and self.branch):
            return await super().get_headers(start_height, count)
        out = await super().get_headers(start_height, max(0, min(count, self.fork + 1 - start_height)))
        h = start_height + len(out) // 80
        return out + b"".join(b.header.serialized for b in self.branch[h - self.fork - 1:][:count - len(out) // 80])


@pytest.mark.parametrize("length, taken", [(5, False), (13, True)])
def test_blocks_above_the_anchor_must_be_the_checked_chain_or_show_more_work(
        env: Env, length: int, taken: bool) -> None:
    """The node's headers are the real chain to 20; its blocks above 9 (the wallet is born
    at 10) a branch of its own: refused, 5 blocks or 13, the wallet takes nothing (since
    12-07 even 13 blocks, more work than the checked 10..20, are not followed while the
    node's own header chain is another: test_a_branch_shown_to_outweigh_the_checked_rows_is_the_one_taken).
    Then its headers show the 13 blocks too (more work): followed, as a reorganisation
    would be; 5 blocks (less work) never: the real blocks are taken once the node serves
    them."""
    real = env.mine(20)
    chain = BlocksOffTheHeaders(env, 9)
    prev = real[8].header
    for i in range(length):
        block = mine_block(prev, 10 + i, b"\x22" * 20, P, prev.time + 1, prev.bits)
        chain.branch.append(block)
        prev = block.header

    async def scenario() -> None:
        w = _wallet(env, chain, "w", 0, birth=10)
        await w.load()
        assert w.store.best_block[1] == -1
        assert sorted(w.store.headers(0, 30)) == list(range(0, 21))          # checked, kept
        assert w.store.headers(10, 10)[10][0] == real[9].hash
        chain.headers_too = True
        await w.sync()
        if taken:
            assert w.store.best_block == (chain.branch[-1].hash, 9 + length)
            assert sorted(w.store.headers(0, 30)) == list(range(0, 10 + length))
        else:
            assert w.store.best_block[1] == -1 and w.anchor_info()["reason"] == "less-work"
            chain.branch = []
            await w.sync()
            assert w.store.best_block == (real[-1].hash, 20)
        assert w.store.check() == []
        await w.close()

    asyncio.run(scenario())


class BadHeaders(NodeChain):
    """The node's Chain whose get_headers answer is replaced by `mode`'s."""

    def __init__(self, env: Env, mode: str) -> None:
        super().__init__(env.cm, env.mempool)
        self.mode = mode

    async def get_headers(self, start_height: int, count: int) -> bytes:
        real = await super().get_headers(start_height, count)
        if self.mode == "unimplemented":
            raise NotImplementedError("Method not implemented: Chain.getHeaders")
        if self.mode == "ragged":
            return real + b"\x00" * 7
        if self.mode == "too-many":
            return real * (MAX_GET_HEADERS // max(1, len(real) // 80) + 2)
        if self.mode in ("unlinked", "high-hash") and start_height <= 3 < start_height + len(real) // 80:
            at = 80 * (3 - start_height)
            h = BlockHeader.from_bytes(real[at:at + 80])
            if self.mode == "unlinked":
                bad = BlockHeader(h.version, bytes(32), h.merkle_root, h.time, h.bits, h.nonce)
            else:
                bad = next(x for n in range(1000) if int.from_bytes((x := BlockHeader(
                    h.version, h.prev_hash, h.merkle_root, h.time, h.bits, n)).hash, "little") > P.pow_limit)
            return real[:at] + bad.serialized + real[at + 80:]
        if self.mode == "not-genesis" and start_height == 0:
            return real[80:]
        return real


@pytest.mark.parametrize("mode, reason", [
    ("unimplemented", "no-headers"), ("ragged", "bad-headers"), ("too-many", "bad-headers"),
    ("unlinked", "bad-prevblk"), ("high-hash", "high-hash"), ("not-genesis", "bad-genesis"),
])
def test_a_bad_headers_answer_is_refused_without_harm(env: Env, mode: str, reason: str) -> None:
    """A node from before get_headers, or one answering with a malformed or invalid header
    chain: the wallet takes no anchor, says why, stays alive (over real Cap'n Proto: the
    error crosses as an IpcError), and takes its anchor once the node answers right."""
    env.mine(12)
    lying = BadHeaders(env, mode)

    async def use(init: Any) -> None:
        chain = await init.make_chain()
        w = _wallet(env, chain, "w", 0, birth=12)
        await w.load()
        assert w.store.best_block[1] == -1
        info = w.anchor_info()
        assert info["status"] == "waiting" and info["reason"] == reason, info
        lying.mode = ""
        await w.sync()
        assert w.store.best_block[1] == 12 and w.anchor_info()["status"] == "anchored"
        await w.close()

    env.chain = lying
    asyncio.run(capnp.run(asyncio.wait_for(_over_ipc(env, use), 60)))


def _regtest_headers(n: int) -> list[BlockHeader]:
    """A header chain of `n` from regtest's genesis (no blocks: free proof of work)."""
    headers = [P.genesis_block.header]
    for _ in range(1, n):
        prev = headers[-1]
        nonce = 0
        while True:
            h = BlockHeader(1, prev.hash, bytes(32), prev.time + 1, prev.bits, nonce)
            if int.from_bytes(h.hash, "little") <= P.pow_limit:
                break
            nonce += 1
        headers.append(h)
    return headers


class Served(NodeChain):
    """The real chain, but `raw` (80-byte headers from genesis) as its header chain."""

    def __init__(self, env: Env, raw: bytes) -> None:
        super().__init__(env.cm, env.mempool)
        self.raw = raw
        self.calls = 0

    async def get_headers(self, start_height: int, count: int) -> bytes:
        self.calls += 1
        return self.raw[80 * start_height:80 * (start_height + min(count, MAX_GET_HEADERS))]


def test_ten_thousand_headers_are_checked_from_genesis_over_ipc(env: Env, capsys) -> None:
    """The cost of the check (docs/wallet.md): 10,000 regtest headers, served by a NodeChain
    over real Cap'n Proto (5 answers of 2000), checked from genesis. Measured, printed, and
    bounded loosely (a shared 2-core machine)."""
    headers = _regtest_headers(10_000)
    raw = b"".join(h.serialized for h in headers)
    served = env.chain = Served(env, raw)
    timings: dict[str, float] = {}

    async def use(init: Any) -> None:
        chain = await init.make_chain()
        check = GenesisCheck(P, frozenset({9_999}))
        t0 = time.perf_counter()
        while piece := await chain.get_headers(check.next_height, MAX_GET_HEADERS):
            check.feed(piece)
        timings["total"] = time.perf_counter() - t0
        assert check.height == 9_999 and check.work == 2 * 10_000
        assert check.kept[9_999].hash == headers[-1].hash
        t0 = time.perf_counter()
        local = GenesisCheck(P, frozenset())
        local.feed(raw)
        timings["check"] = time.perf_counter() - t0

    asyncio.run(capnp.run(asyncio.wait_for(_over_ipc(env, use), 60)))
    assert served.calls == 6                     # five full answers, one empty
    with capsys.disabled():
        print(f"\n10,000 headers from genesis: {timings['total']:.3f} s over IPC "
              f"({timings['check']:.3f} s of it the checks), 800,000 bytes in 5 answers")
    assert timings["total"] < 10.0


class Rewinder(NodeChain):
    """The real chain until `stage` says otherwise: "rewind", the node's chain ends at `fork`
    (an invalidateblock, as far as the wallet can tell); "branch", `branch` follows `fork`
    in everything the wallet reads (blocks, headers, hashes, infos)."""

    def __init__(self, env: Env, fork: int) -> None:
        super().__init__(env.cm, env.mempool)
        self.fork = fork
        self.stage = ""
        self.branch: list[Any] = []

    def _above(self) -> list[Any] | None:
        return {"rewind": [], "branch": self.branch}.get(self.stage)

    async def get_height(self) -> int:
        above = self._above()
        return self.fork + len(above) if above is not None else await super().get_height()

    async def get_blocks(self, start_height: int, count: int) -> list[bytes]:
        above = self._above()
        if above is None:
            return await super().get_blocks(start_height, count)
        out = await super().get_blocks(start_height, max(0, min(count, self.fork + 1 - start_height)))
        h = start_height + len(out)
        out += [b.to_bytes() for b in above[h - self.fork - 1:][:count - len(out)]]
        return out

    async def get_headers(self, start_height: int, count: int) -> bytes:
        above = self._above()
        if above is None:
            return await super().get_headers(start_height, count)
        out = await super().get_headers(start_height, max(0, min(count, self.fork + 1 - start_height)))
        h = start_height + len(out) // 80
        return out + b"".join(b.header.serialized for b in above[h - self.fork - 1:][:count - len(out) // 80])

    async def get_block_header_info(self, block_hash: bytes) -> Any:
        above = self._above()
        for i, b in enumerate(above or ()):
            if b.hash == block_hash:
                return BlockInfo(b.hash, self.fork + 1 + i, b.header.time, b.header.prev_hash, True)
        info = await super().get_block_header_info(block_hash)
        if above is not None and info.height > self.fork:
            return dataclasses.replace(info, in_active_chain=False)
        return info

    async def find_fork(self, locator: list[bytes]) -> int:
        above = self._above()
        fork = await super().find_fork(locator)
        return min(fork, self.fork) if above is not None else fork


def test_after_a_rewind_the_chain_is_checked_again_before_the_next_block(env: Env) -> None:
    """The wallet at 20 (minimum chain work 42: the real chain's). The node says its chain
    ends at 10 (a rewind: followed, the wallet shows less), then shows 3 blocks of its own on
    10 paying the wallet 1000 coins, with headers to match: valid one by one, at the
    difficulty of height 10's era. Before, the wallet took them (nothing but the blocks' own
    checks after a rewind); now it checks the node's chain from genesis again before the next
    block: work 28, refused (below-minimum-chain-work). The real chain is taken again."""
    real = env.mine(20)
    chain = Rewinder(env, 10)

    async def scenario() -> None:
        w = _wallet(env, chain, "w", 42, birth=10)
        pkh = w.new_key(False).pkh
        await w.load()
        assert w.store.best_block == (real[-1].hash, 20)
        chain.stage = "rewind"
        await w.sync()
        assert w.store.best_block == (real[9].hash, 10) and w.store.chain_recheck
        prev = real[9].header
        payment = Transaction(1, (TxIn(OutPoint(b"\x33" * 32, 0), b"\x00" * 100),), (TxOut(1000 * 10**8, pkh),), 0)
        for i in range(3):
            block = mine_block(prev, 11 + i, b"\x22" * 20, P, prev.time + 1, prev.bits, (payment,) if i == 2 else ())
            chain.branch.append(block)
            prev = block.header
        chain.stage = "branch"
        await w.sync()
        assert w.store.best_block[1] == 10 and w.store.get_transaction(payment.txid) is None
        assert w.anchor_info()["reason"] == "below-minimum-chain-work"
        assert w._genesis_check is not None and w._genesis_check.begin == 10    # resumed at the fork
        chain.stage = ""
        await w.sync()
        assert w.anchor_info()["status"] == "anchored", w.anchor_info()
        assert w.store.best_block == (real[-1].hash, 20) and not w.store.chain_recheck
        assert w.store.check() == []
        await w.close()

    asyncio.run(scenario())


def _branch(parent: BlockHeader, height: int, n: int, paid: bytes | None = None) -> list[Any]:
    """n blocks of the attacker's on `parent` (at `height` - 1), one a second after the other
    at its bits (valid proof of work: free on regtest); the last pays `paid` 1000 coins out of
    nothing when given."""
    out = []
    for i in range(n):
        txs = ()
        if paid is not None and i == n - 1:
            txs = (Transaction(1, (TxIn(OutPoint(b"\x44" * 32, 0), b"\x00" * 100),), (TxOut(1000 * 10**8, paid),), 0),)
        out.append(mine_block(parent, height + i, b"\x22" * 20, P, parent.time + 1, parent.bits, txs))
        parent = out[-1].header
    return out


def test_a_reorganisation_cut_short_does_not_lower_the_bar(env: Env) -> None:
    """The wallet at 20. The node shows a branch from 10 with more work (12 blocks), which
    the wallet weighs and starts to follow; the unwind breaks off after the first disconnect
    (an error of the store's here: a kill -9 there, test_wallet_reorg_crash; before 12-07
    the node could break it off too, by failing the question about the next block's parent,
    which the wallet now reads from its own header row); then the node shows a
    branch of 10 blocks from 10 paying the wallet 1000 coins: the work of the wallet's own
    blocks 11..20. Before 12-07 the disconnect took block 20's row, so the wallet, now at 19,
    weighed that branch against 11..19 only and took it (the payment shown); now the row
    stays without its block and the branch is refused (`less-work`). The real chain again:
    followed back to 20."""
    real = env.mine(20)
    chain = Rewinder(env, 10)

    async def scenario() -> None:
        w = _wallet(env, chain, "w", 0, birth=10)
        pkh = w.new_key(False).pkh
        await w.load()
        assert w.store.best_block == (real[-1].hash, 20)
        chain.branch, chain.stage = _branch(real[9].header, 11, 12), "branch"
        disconnect = w.store.disconnect_block

        def cut_short(block_hash: bytes, height: int, prev_hash: bytes | None) -> None:
            if w.store.best_block[1] == 19:
                raise ChainError("the unwind breaks off")
            disconnect(block_hash, height, prev_hash)

        w.store.disconnect_block = cut_short          # type: ignore[method-assign]
        with pytest.raises(Exception, match="breaks off"):
            await w.sync()
        w.store.disconnect_block = disconnect         # type: ignore[method-assign]
        assert w.store.best_block == (real[18].hash, 19) and w.store.headers(20, 20)[20][2]
        fake = _branch(real[9].header, 11, 10, paid=pkh)
        chain.branch = fake
        await w.sync()
        assert w.store.get_transaction(fake[-1].txs[1].txid) is None
        assert w.store.best_block == (real[18].hash, 19)      # weighed first, nothing undone
        chain.stage = ""
        await w.sync()
        assert w.store.best_block == (real[-1].hash, 20) and w.store.check() == []
        await w.close()

    asyncio.run(scenario())


def test_a_wallet_anchored_on_trust_before_h40_is_checked_before_its_next_block(env: Env) -> None:
    """A wallet file from before h40 (its header rows, no `chain_recheck` in meta) took its
    anchor from the node on trust. Loaded with a minimum chain work of 40 while the node's
    chain has 32: it took the node's next blocks as they came; now it checks the chain from
    genesis first and waits below the minimum, and follows once the work is there."""
    env.mine(10)

    async def scenario() -> None:
        w = _wallet(env, env.chain, "old", 0, birth=5)
        await w.load()
        assert w.store.best_block[1] == 10
        await w.close()
        store = WalletStore.open(env.path, "old", P.name)
        with store._lock, store._conn:                     # as a file from before h40
            store._conn.execute("DELETE FROM meta WHERE key = 'chain_recheck'")
        assert store.chain_recheck
        env.mine(5)
        w = Wallet("old", store, env.chain, minimum_chain_work=40)
        await w.load()
        assert w.store.best_block[1] == 10 and w.anchor_info()["reason"] == "below-minimum-chain-work"
        env.mine(10)
        await w.sync()
        assert w.store.best_block[1] == 25 and not w.store.chain_recheck
        assert w.store.check() == []
        await w.close()

    asyncio.run(scenario())


class ForkLiar(Rewinder):
    """A Rewinder whose branch forks at `fork` while it names `claimed` (above it) as the
    fork: the wallet's blocks up to `claimed` are said to be in its active chain."""

    def __init__(self, env: Env, fork: int, claimed: int) -> None:
        super().__init__(env, fork)
        self.claimed = claimed
        self.served: list[int] = []            # the start height of each getHeaders answered

    async def get_headers(self, start_height: int, count: int) -> bytes:
        self.served.append(start_height)
        return await super().get_headers(start_height, count)

    async def get_block_header_info(self, block_hash: bytes) -> Any:
        info = await super().get_block_header_info(block_hash)
        if self.stage == "branch" and info.height <= self.claimed:
            return dataclasses.replace(info, in_active_chain=True)
        return info

    async def find_fork(self, locator: list[bytes]) -> int:
        return self.claimed if self.stage == "branch" else await super().find_fork(locator)


def test_a_node_that_lies_about_where_the_fork_is_gets_no_block_taken(env: Env) -> None:
    """Since 12-07 the check after a disconnect resumes at the wallet's best block instead
    of genesis. The node rewinds the wallet from 20 to 13 (an honest-looking rewind: its
    chain ends at 13), then shows a branch of its own forked at 10 (11..16, the last paying
    the wallet 1000 coins) while it says the wallet's 13 is still in its chain. The resumed
    check finds the node's header at 13 is not the wallet's: refused (bad-anchor), the
    payment not taken, at the cost of one answer from 13 each round. (On the first version
    of the resumed check the wallet then read the node's chain from genesis each round,
    where the check refused it for the same reason: a lying node had it read the whole
    chain again at will.) The real chain is taken again."""
    real = env.mine(20)
    chain = ForkLiar(env, 10, 13)

    async def scenario() -> None:
        w = _wallet(env, chain, "w", 0, birth=5)
        pkh = w.new_key(False).pkh
        await w.load()
        chain.fork, chain.stage = 13, "rewind"
        await w.sync()
        assert w.store.best_block == (real[12].hash, 13) and w.store.chain_recheck
        chain.fork = 10
        prev = real[9].header
        payment = Transaction(1, (TxIn(OutPoint(b"\x33" * 32, 0), b"\x00" * 100),), (TxOut(1000 * 10**8, pkh),), 0)
        for i in range(6):
            block = mine_block(prev, 11 + i, b"\x22" * 20, P, prev.time + 1, prev.bits, (payment,) if i == 5 else ())
            chain.branch.append(block)
            prev = block.header
        chain.stage = "branch"
        chain.served.clear()
        for _ in range(2):
            await w.sync()
        assert w.store.best_block == (real[12].hash, 13) and w.store.get_transaction(payment.txid) is None
        assert w.anchor_info()["reason"] == "bad-anchor", w.anchor_info()
        assert chain.served == [13, 13], chain.served
        chain.stage = ""
        await w.sync()
        assert w.store.best_block == (real[-1].hash, 20) and not w.store.chain_recheck
        assert w.store.check() == []
        await w.close()

    asyncio.run(scenario())


def test_a_long_header_chain_is_checked_and_stored_in_bounded_memory(env: Env) -> None:
    """A wallet born at genesis and a node serving 40,000 headers (a compromised node's fake
    chain, free on regtest, or a real one): the wallet checks them all and stores them above
    its anchor. Before 12-07 the check kept every header above the anchor (80 bytes each,
    without bound), then made the rows as a list of header objects: 835 bytes a header at the
    peak. Now the check keeps its tip only, and the rows are read again one answer at a time
    from the tip down, each proven by hash to be the checked chain's (headers.prove_down):
    Python's peak (tracemalloc) 1.3 MB whatever the length, bounded here at 2.5 MB (3.4 MB with
    80 bytes a header, 33 MB before)."""
    n = 40_000
    env.chain = Served(env, b"".join(h.serialized for h in _regtest_headers(n)))
    peak: list[int] = []

    async def scenario() -> None:
        w = _wallet(env, env.chain, "g", 0, birth=0)
        tracemalloc.start()
        try:
            await w.load()
            peak.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert w.anchor_info()["status"] == "anchored" and w.store.header_count() == n
        await w.close()

    asyncio.run(scenario())
    assert peak[0] < 2_500_000, f"{peak[0] / 1e6:.1f} MB"


class Swapping(Served):
    """Served, but from the `after`-th call on its header at `height` is another one."""

    def __init__(self, env: Env, headers: list[BlockHeader], after: int, height: int) -> None:
        super().__init__(env, b"".join(h.serialized for h in headers))
        other = dataclasses.replace(headers[height], time=headers[height].time + 1)
        while int.from_bytes(other.hash, "little") > P.pow_limit:
            other = dataclasses.replace(other, nonce=other.nonce + 1)
        self.swapped = self.raw[:80 * height] + other.serialized + self.raw[80 * (height + 1):]
        self.after = after

    async def get_headers(self, start_height: int, count: int) -> bytes:
        honest = self.raw
        if self.after and self.calls + 1 >= self.after:
            self.raw = self.swapped
        try:
            return await super().get_headers(start_height, count)
        finally:
            self.raw = honest


def test_headers_read_again_for_the_store_must_be_the_ones_checked(env: Env, caplog) -> None:
    """The node serves 5000 honest headers to the check (4 answers), then, read again for the
    rows above the anchor (from the tip down, 2000 at a time), another header at 2500 (valid
    on its own). Refused (`headers-changed`): no anchor, no block; the answer proven before
    the swap (3000..4999) is stored with chain_recheck set, so a kill here means a new check,
    not blocks taken against half the rows. The load's second round checks again from
    genesis (the wallet's top row moved, which the check keeps since 12-07) and meets the
    swapped header inside the chain (`bad-prevblk`). Honest again: the wallet anchors with the
    real header at 2500."""
    headers = _regtest_headers(5000)
    chain = env.chain = Swapping(env, headers, after=5, height=2500)

    async def scenario() -> None:
        w = _wallet(env, chain, "g", 0, birth=0)
        with caplog.at_level(logging.WARNING, logger="cleancoin.wallet"):
            await w.load()
        reasons = [r.getMessage().split(": ")[2].split(" ")[0] for r in caplog.records
                   if "no anchor taken" in r.getMessage()]
        assert reasons == ["headers-changed", "bad-prevblk"], reasons
        assert w.store.best_block[1] == -1 and w.store.chain_recheck
        assert w.store.header_count() == 2000 and min(w.store.headers(0, 5000)) == 3000
        chain.after = 0
        await w.sync()
        assert w.anchor_info()["status"] == "anchored" and not w.store.chain_recheck
        assert w.store.headers(2500, 2500)[2500][0] == headers[2500].hash
        assert w.store.header_count() == 5000 and w.store.best_block[1] == 0
        await w.close()

    asyncio.run(scenario())


class BaitAndSwitch(NodeChain):
    """The real chain and its headers, but at `fork` + 1 the node's blocks are its own block
    `fake` (on the real block at `fork`), except when the wallet asks for them again right
    after the fake, before it asks for the chain's height: that is the wallet weighing the
    node's branch against its rows (before 12-07), and gets the real blocks."""

    def __init__(self, env: Env, fork: int, fake: Any) -> None:
        super().__init__(env.cm, env.mempool)
        self.fork, self.fake = fork, fake
        self.fake_served = False
        self.weighed = 0

    async def get_height(self) -> int:
        self.fake_served = False
        return await super().get_height()

    async def get_blocks(self, start_height: int, count: int) -> list[bytes]:
        if start_height == self.fork + 1 and self.fake is not None:
            if not self.fake_served:
                self.fake_served = True
                return [self.fake.to_bytes()]
            self.weighed += 1
        return await super().get_blocks(start_height, count)

    async def get_block_header_info(self, block_hash: bytes) -> BlockInfo:
        if self.fake is not None and block_hash == self.fake.hash:
            return BlockInfo(block_hash, self.fork + 1, self.fake.header.time, self.fake.header.prev_hash, True)
        return await super().get_block_header_info(block_hash)


def test_a_branch_shown_to_outweigh_the_checked_rows_is_the_one_taken(env: Env) -> None:
    """The wallet is born at 10 and anchored on the real chain to 20 (rows 10..20 stored
    without their blocks). The real chain grows to 30. The node then offers its own block 10
    paying the wallet 1000 coins (refused: not the checked header there), shows the real
    blocks 10..30 when the wallet weighs the node's branch against its rows (more work: the
    rows give way), and its own block 10 again in the catch-up that follows. Before 12-07 the
    wallet took it: one block of work at height 10's difficulty bought a 1000-coin payment
    past a checked chain of 11 blocks. Now the rows give way only to the node's header chain,
    checked in full and stored in their place, and the catch-up's blocks must be its own."""
    real = env.mine(20)
    chain = BaitAndSwitch(env, 9, None)

    async def scenario() -> None:
        w = _wallet(env, chain, "w", 0, birth=10)
        pkh = w.new_key(False).pkh
        payment = Transaction(1, (TxIn(OutPoint(b"\x44" * 32, 0), b"\x00" * 100),), (TxOut(1000 * 10**8, pkh),), 0)
        prev = real[8].header
        chain.fake = mine_block(prev, 10, b"\x22" * 20, P, prev.time + 1, prev.bits, (payment,))
        await w.load()
        # The fake refused; the real blocks 10..20 no more work than the rows: nothing taken.
        assert w.store.best_block[1] == -1 and sorted(w.store.headers(10, 40)) == list(range(10, 21))
        env.mine(10)
        await w.sync()
        taken = w.store.get_transaction(payment.txid) is not None
        print(f"after the bait and switch: wallet at {w.store.best_block[1]}, fake payment taken: {taken}, "
              f"balance {w.balances().trusted}, real blocks shown for the weighing {chain.weighed} times")
        assert not taken
        assert w.store.best_block[1] in (-1, 30)
        chain.fake = None
        await w.sync()
        assert w.store.best_block == (env.cm.tip.hash, 30) and w.store.check() == []
        await w.close()

    asyncio.run(scenario())


class ParentLiar(Rewinder):
    """A Rewinder whose answer about the wallet's best block names `parent` as its parent
    while `lie` is set."""

    lie: bytes | None = None

    async def get_block_header_info(self, block_hash: bytes) -> Any:
        info = await super().get_block_header_info(block_hash)
        return dataclasses.replace(info, prev_hash=self.lie) if self.lie and info.height > self.fork else info


def test_a_rewind_takes_the_parent_from_the_wallets_own_header(env: Env) -> None:
    """The node rewinds the wallet (its chain ends at 10) and names, for each block the
    wallet undoes, a parent of its own making. Before 12-07 the wallet took that hash as its
    best block: its file disagreed with itself (`check`: the header at 19 is not the best
    block's), and it was wedged for good: no block builds on a hash that is no block, and
    the honest node, asked about it, knew no such block. Now the parent is the one the
    undone block's own header names; the wallet follows the node back."""
    real = env.mine(20)
    chain = ParentLiar(env, 10)

    async def scenario() -> None:
        w = _wallet(env, chain, "w", 0, birth=10)
        await w.load()
        assert w.store.best_block == (real[-1].hash, 20)
        chain.stage, chain.lie = "rewind", b"\x66" * 32
        with contextlib.suppress(Exception):
            await w.sync()
        state = (w.store.best_block[1], w.store.best_block[0] == b"\x66" * 32, w.store.check())
        chain.stage, chain.lie = "", None
        env.mine(1)                     # (the notification's sync may fail too: suppressed below)
        for _ in range(2):
            with contextlib.suppress(Exception):
                await w.sync()
        print(f"after the rewind with made-up parents: wallet at {state[0]}, best hash the node's made-up one: "
              f"{state[1]}, check {state[2]}; the node honest again: wallet at {w.store.best_block[1]}, "
              f"check {w.store.check()}")
        assert not state[1] and state[2] == []
        assert w.store.best_block == (env.cm.tip.hash, 21) and w.store.check() == []
        await w.close()

    asyncio.run(scenario())


class CutInTheStore(Rewinder):
    """A Rewinder whose header answer starting at `cut` is garbage: the node changes its chain
    while the wallet stores it from the tip down."""

    cut = -1

    async def get_headers(self, start_height: int, count: int) -> bytes:
        if start_height == self.cut:
            return b"\x00" * 80 * count
        return await super().get_headers(start_height, count)


def test_a_rescan_below_the_best_block_ignores_rows_above_it(env: Env, monkeypatch) -> None:
    """The wallet at 20 (born at genesis) is rewound to 10, then shown a branch of 15 blocks
    from 10 (more work than its rows 11..20), which it stores from the tip down, 4 headers an
    answer here: 22..25 first, in the transaction that drops the rows above 25; then the node
    changes the answer below (`headers-changed`). The rows have a gap at 21 between the old
    chain's 11..20 and the branch's 22..25. The node honest again, before 12-07 a rescan of
    the wallet's blocks (0..10) extended the rows down from the lowest row of the top run
    (22), matching the node's blocks below it against the branch's row there: `Rescan stopped
    at height 21: ... refused (bad-prevblk)`, for good while the gap stayed; now the rows
    above the best block play no part in a rescan. And a reorganisation below the best block
    is weighed against the rows present: before 12-07 it needed every row up to the highest,
    and the gap refused it for good (`fork-below-header-chain`)."""
    monkeypatch.setattr(wallet_mod, "MAX_GET_HEADERS", 4)
    real = env.mine(20)
    chain = CutInTheStore(env, 10)

    async def scenario() -> None:
        w = _wallet(env, chain, "w", 0, birth=0)
        await w.load()
        assert w.store.best_block == (real[-1].hash, 20)
        chain.stage = "rewind"
        await w.sync()
        assert w.store.best_block == (real[9].hash, 10)
        chain.branch = _branch(real[9].header, 11, 15)
        chain.stage, chain.cut = "branch", 18
        await w.sync()
        assert w.anchor_info()["reason"] == "headers-changed", w.anchor_info()
        rows = w.store.headers(0, 40)
        assert sorted(rows) == list(range(0, 21)) + list(range(22, 26))
        chain.stage = ""
        result = await w.rescan(0)
        assert result == (0, 10), result
        assert w.store.check() == []
        # A reorganisation below the best block: a branch from 8 of 22 blocks, weighed against
        # the wallet's blocks 9..10 and the rows present above them (14).
        chain.fork, chain.branch, chain.stage, chain.cut = 8, _branch(real[7].header, 9, 22), "branch", -1
        await w.sync()
        assert w.store.best_block == (chain.branch[-1].hash, 30), w.store.best_block
        assert sorted(w.store.headers(0, 40)) == list(range(0, 31)) and w.store.check() == []
        await w.close()

    asyncio.run(scenario())


class CountedOffTheHeaders(BlocksOffTheHeaders):
    """BlocksOffTheHeaders that records where each of its header answers starts."""

    def __init__(self, env: Env, fork: int) -> None:
        super().__init__(env, fork)
        self.starts: list[int] = []

    async def get_headers(self, start_height: int, count: int) -> bytes:
        self.starts.append(start_height)
        return await super().get_headers(start_height, count)


def test_a_block_off_the_rows_of_a_new_wallet_has_the_chain_read_from_its_anchor(env: Env) -> None:
    """A new wallet (born at 10, no block yet) whose node serves a block of its own at 10:
    refused every round, and every round the node's header chain is checked again
    (`_overtaken`). It resumes at the anchor (the wallet's row at 9, by hash, and the work
    checked up to there), not at genesis: on a main-sized chain that would be the whole chain
    read at every block the node announced."""
    real = env.mine(300)
    chain = CountedOffTheHeaders(env, 9)
    chain.branch = _branch(real[8].header, 10, 1)

    async def scenario() -> None:
        w = _wallet(env, chain, "w", 0, birth=10)
        await w.load()
        assert w.store.best_block[1] == -1
        chain.starts.clear()
        for _ in range(3):
            await w.sync()
        print(f"header answers of three refused rounds start at {sorted(set(chain.starts))}")
        assert w.store.best_block[1] == -1 and chain.starts and min(chain.starts) >= 9, chain.starts
        assert (w.anchor_info()["status"], w.anchor_info()["reason"]) == ("waiting", "not-in-header-chain")
        chain.branch = []
        await w.sync()
        assert w.store.best_block == (real[-1].hash, 300) and w.store.check() == []
        await w.close()

    asyncio.run(scenario())


def test_a_wallet_without_header_rows_is_not_wedged_by_made_up_parents(env: Env) -> None:
    """A wallet file from before the header chain (no rows yet: its first load after the
    upgrade) at 20; the node rewinds it to 10 and names, for each block it undoes, a parent
    of its own making. Before 12-07 the wallet took the node's parent for a block without a
    row: its best block became a hash that is no block, and it was wedged for good, the node
    honest again or not (every round asked the node about that hash and failed). Now blocks
    without a row are undone down to the fork in one transaction, the fork's hash the wallet's
    own row there or the node's active chain's, checked from genesis before the next block:
    the node honest again, the wallet follows it to its tip."""
    real = env.mine(20)
    chain = ParentLiar(env, 10)

    async def scenario() -> None:
        w = _wallet(env, chain, "w", 0, birth=0)
        await w.load()
        assert w.store.best_block == (real[-1].hash, 20)
        await w.close()
        store = WalletStore.open(env.path, "w", P.name)
        with store._lock, store._conn:                     # as a file from before the rows
            store._conn.execute("DELETE FROM headers")
            store._conn.execute("DELETE FROM meta WHERE key IN ('chain_recheck', 'checked_work')")
        w = Wallet("w", store, chain)
        chain.stage, chain.lie = "rewind", b"\x66" * 32
        with contextlib.suppress(Exception):
            await w.load()
        state = (w.store.best_block[1], w.store.best_block[0] == b"\x66" * 32)
        chain.stage, chain.lie = "", None
        env.mine(1)
        for _ in range(2):
            with contextlib.suppress(Exception):
                await w.sync()
        print(f"rowless wallet rewound with made-up parents: wallet at {state[0]}, best hash the node's "
              f"made-up one: {state[1]}; the node honest again: wallet at {w.store.best_block[1]} "
              f"(node at 21), check {w.store.check()}")
        assert not state[1]
        assert w.store.best_block == (env.cm.tip.hash, 21) and w.store.check() == []
        await w.close()

    asyncio.run(scenario())
