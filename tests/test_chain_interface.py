"""The Chain interface: one scenario, `exercise`, run against the local NodeChain and against
the Cap'n Proto proxy of the same implementation, with identical results.

Real regtest chain (solved blocks, SQLite), real mempool, real signed spends; the IPC run
serves a node-like Init on one end of a socketpair and connects to it from the other, both in
one asyncio loop, so the notifications object really travels as a capability and the node
calls it back over the socket.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import capnp
from ipc_pair import use_over_socketpair
import pytest

from cleancoin.components.interfaces.chain import MAX_GET_HEADERS, Chain, ChainError
from cleancoin.components.ipc.errors import IpcError
from cleancoin.components.interfaces.init import IpcPeer
from cleancoin.components.common.amount import COIN
from cleancoin.components.node.chain import BlockIndex, ChainManager
from cleancoin.components.node.chain_binding import NodeChain
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.keys import PrivateKey, sign_transaction
from cleancoin.components.node.mempool import Mempool
from cleancoin.components.node.mining import mine_block
from cleancoin.components.node.node import ChainViewAdapter, MempoolUpdater
from cleancoin.components.common.primitives import Block, OutPoint, Transaction, TxIn, TxOut

P = REGTEST
NOW = 2_100_000_000
KEY_A = PrivateKey(hashlib.sha256(b"chain interface key A").digest())
PKH_A = KEY_A.public_key.pkh
PKH_B = PrivateKey(hashlib.sha256(b"chain interface key B").digest()).public_key.pkh
TIMEOUT = 30.0
ME = IpcPeer("test-wallet", os.getpid())
NODE = IpcPeer("CleanCoin-node", os.getpid())


# ------------------------------------------------------------------------------- fixtures

class Env:
    """A regtest chain 101 blocks high (the first coinbase is mature), a mempool on it, kept
    on the tip by the node's own listener, and the announce calls NodeChain made."""

    def __init__(self, path: Path) -> None:
        self.cm = ChainManager(P, str(path / "chain.sqlite"), now=lambda: NOW)
        self.mempool = Mempool(P, ChainViewAdapter(self.cm))
        self.cm.add_listener(MempoolUpdater(self.mempool))     # first, as node.py does
        self.announced: list[bytes] = []
        for _ in range(101):
            self.mine()

    def chain(self) -> NodeChain:
        return NodeChain(self.cm, self.mempool, self.announced.append)

    def mine(self, parent: BlockIndex | None = None, txs: tuple[Transaction, ...] = (), fees: int = 0,
             pkh: bytes = PKH_A) -> Block:
        parent = parent or self.cm.tip
        h = parent.header
        block = mine_block(h, parent.height + 1, pkh, P, h.time + 600, self.cm.next_bits(parent), txs, fees)
        self.cm.accept_block(block)
        return block

    def coinbase(self, height: int) -> OutPoint:
        block = self.cm.get_block(self.cm.block_at_height(height).hash)   # type: ignore[union-attr]
        assert block is not None
        return OutPoint(block.txs[0].txid, 0)


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[[str], Env]]:
    envs: list[Env] = []

    def make(name: str) -> Env:
        (tmp_path / name).mkdir()
        envs.append(Env(tmp_path / name))
        return envs[-1]

    yield make
    for env in envs:
        env.cm.close()


def spend(prevout: OutPoint, value: int, pkh: bytes) -> Transaction:
    tx = Transaction(1, (TxIn(prevout),), (TxOut(value, pkh),))
    return sign_transaction(tx, [KEY_A])


class Recorder:
    """A ChainNotifications implementation that records what it hears."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self._changed = asyncio.Event()

    def _add(self, *event: Any) -> None:
        self.events.append(event)
        self._changed.set()

    async def block_connected(self, block: bytes, height: int) -> None:
        self._add("connected", height, Block.from_bytes(block).hash)

    async def block_disconnected(self, block: bytes, height: int) -> None:
        self._add("disconnected", height, Block.from_bytes(block).hash)

    async def transaction_added_to_mempool(self, tx: bytes) -> None:
        self._add("added", Transaction.from_bytes(tx).txid)

    async def transaction_removed_from_mempool(self, txid: bytes, reason: str) -> None:
        self._add("removed", txid, reason)

    async def wait_for(self, count: int) -> list[tuple[Any, ...]]:
        while len(self.events) < count:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), 5)
        return list(self.events)


# ------------------------------------------------------------------------------- the scenario

async def exercise(chain: Chain, env: Env) -> dict[str, Any]:
    """Everything the wallet will do, against `chain`; returns what it saw."""
    cm = env.cm
    facts: dict[str, Any] = {}
    facts["height"] = await chain.get_height()
    facts["hashes"] = [await chain.get_block_hash(h) for h in (0, 50, 101)]
    assert facts["hashes"] == [cm.block_at_height(h).hash for h in (0, 50, 101)]   # type: ignore[union-attr]
    tip_info = await chain.get_block_header_info(facts["hashes"][2])
    facts["tip_info"] = tip_info

    # One round trip for a batch: the exact stored bytes, cut at the tip.
    batch = await chain.get_blocks(95, 10)
    expected = [cm.get_block(cm.block_at_height(h).hash).to_bytes() for h in range(95, 102)]   # type: ignore[union-attr]
    assert batch == expected
    facts["batch"] = batch
    facts["past_tip"] = await chain.get_blocks(102, 5)

    facts["fork_tip"] = await chain.find_fork(cm.locator())
    facts["fork_60"] = await chain.find_fork([b"\x55" * 32, cm.block_at_height(60).hash])   # type: ignore[union-attr]
    facts["fork_none"] = await chain.find_fork([b"\x66" * 32])
    facts["relay_min_fee"] = await chain.relay_min_fee()

    recorder = Recorder()
    handler = await chain.handle_notifications(recorder)

    # Broadcast: a valid spend, its double spend, a fee above the caller's limit, garbage.
    fee = 10_000
    good = spend(env.coinbase(1), 50 * COIN - fee, PKH_B)
    facts["good"] = await chain.broadcast_transaction(good.to_bytes(), 100_000)
    facts["good_again"] = await chain.broadcast_transaction(good.to_bytes(), 100_000)
    double = spend(env.coinbase(1), 50 * COIN - 2 * fee, PKH_A)
    facts["double"] = await chain.broadcast_transaction(double.to_bytes(), 0)
    facts["too_dear"] = await chain.broadcast_transaction(spend(env.coinbase(2), 40 * COIN, PKH_B).to_bytes(), COIN)
    facts["garbage"] = await chain.broadcast_transaction(b"\x01\x02", 0)
    facts["in_pool"] = (await chain.is_in_mempool(good.txid), await chain.is_in_mempool(double.txid))

    # A transaction that reaches the pool without the binding (P2P, sendrawtransaction) is
    # reported too: the pool itself tells the registration.
    direct = spend(env.coinbase(2), 50 * COIN - fee, PKH_B)   # too_dear left it unspent
    env.mempool.accept(direct)
    facts["direct_in_pool"] = await chain.is_in_mempool(direct.txid)

    # 3 blocks (the first confirms both spends), then a reorg of 1. A block comes before the
    # pool removals it causes.
    b102 = env.mine(txs=(good, direct), fees=2 * fee)
    b103 = env.mine()
    b104 = env.mine()
    cm.invalidate_block(b104.hash)
    b104x = env.mine(pkh=PKH_B)
    events = await recorder.wait_for(9)
    assert events == [
        ("added", good.txid),
        ("added", direct.txid),
        ("connected", 102, b102.hash),
        ("removed", good.txid, "block"),
        ("removed", direct.txid, "block"),
        ("connected", 103, b103.hash),
        ("connected", 104, b104.hash),
        ("disconnected", 104, b104.hash),
        ("connected", 104, b104x.hash),
    ], events
    facts["events"] = events
    facts["after"] = (await chain.get_height(), await chain.is_in_mempool(good.txid),
                      await chain.is_in_mempool(direct.txid))
    facts["stale_info"] = await chain.get_block_header_info(b104.hash)

    # After disconnect nothing more arrives (a round trip later, the queue would have run).
    await handler.disconnect()
    env.mine()
    facts["height_end"] = await chain.get_height()
    await asyncio.sleep(0.1)
    facts["events_after_disconnect"] = recorder.events[len(events):]

    # Failures: both bindings fail, with the same text.
    for name, call in (("bad_height", lambda: chain.get_block_hash(1000)),
                       ("bad_hash", lambda: chain.get_block_header_info(b"\x77" * 32))):
        try:
            await call()
        except (ChainError, IpcError) as exc:
            facts[name] = str(exc).rsplit(": ", 1)[-1]
        else:
            facts[name] = None
    return facts


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(capnp.run(asyncio.wait_for(coro, TIMEOUT)))


async def over_ipc(env: Env, use: Callable[[Any], Awaitable[Any]],
                   factory: Callable[[], Chain] | None) -> Any:
    """Serve a node's Init (with `factory` as its chain factory) on one end of a socketpair,
    connect from the other, and run `use(init proxy)`."""
    return await use_over_socketpair(factory, use, NODE, ME)


# ------------------------------------------------------------------------------- tests

def test_local_and_ipc_bindings_cannot_be_told_apart(make_env: Callable[[str], Env]) -> None:
    local_env = make_env("local")
    local = run(exercise(local_env.chain(), local_env))

    ipc_env = make_env("ipc")

    async def use(init: Any) -> Any:
        chain = await init.make_chain()
        assert not isinstance(chain, NodeChain)          # really the proxy
        return await exercise(chain, ipc_env)

    remote = run(over_ipc(ipc_env, use, ipc_env.chain))

    assert remote == local
    # And the facts themselves are right (the same chain is built in both environments).
    assert local["height"] == 101 and local["after"] == (104, False, False) and local["height_end"] == 105
    assert local["tip_info"].height == 101 and local["tip_info"].in_active_chain
    assert local["tip_info"].prev_hash == local_env.cm.block_at_height(100).hash   # type: ignore[union-attr]
    assert local["stale_info"].height == 104 and not local["stale_info"].in_active_chain
    assert len(local["batch"]) == 7 and local["past_tip"] == []
    assert (local["fork_tip"], local["fork_60"], local["fork_none"]) == (101, 60, 0)
    assert local["relay_min_fee"] == 1000
    assert local["good"].ok and local["good"].reason == "" and local["good_again"].ok
    assert (local["double"].ok, local["double"].reason) == (False, "txn-mempool-conflict")
    assert (local["too_dear"].ok, local["too_dear"].reason) == (False, "max-fee-exceeded")
    assert local["garbage"] == type(local["garbage"])(False, b"", "TX decode failed")
    assert local["in_pool"] == (True, False) and local["direct_in_pool"]
    assert local["events_after_disconnect"] == []
    assert local["bad_height"] == "height 1000 is out of range (tip at 105)"
    assert local["bad_hash"].startswith("unknown block 7777")
    # The accepted spend was relayed (twice: the re-broadcast announces again), in both runs.
    assert local_env.announced == ipc_env.announced == [local["good"].txid] * 2


def test_a_process_without_a_chain_refuses_make_chain(make_env: Callable[[str], Env]) -> None:
    env = make_env("none")

    async def use(init: Any) -> str:
        with pytest.raises(IpcError) as info:
            await init.make_chain()
        return str(info.value)

    message = run(over_ipc(env, use, None))
    assert "this process offers no Chain" in message


def test_chain_schema_text_in_doc_is_the_installed_schema() -> None:
    """docs/ipc.md shows chain.capnp as installed (test_ipc_docs checks the other schemas)."""
    import re

    from cleancoin.components.ipc.schema import SCHEMA_DIR
    doc = (Path(__file__).resolve().parents[1] / "docs" / "ipc.md").read_text()
    blocks = re.findall(r'^```capnp title="chain\.capnp"\n(.*?)^```[ \t]*$', doc, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1
    assert blocks[0].rstrip() == Path(SCHEMA_DIR, "chain.capnp").read_text().rstrip()


def test_get_headers_asked_by_a_hostile_wallet_is_bounded(make_env: Callable[[str], Env]) -> None:
    """Attack from the wallet's side of getHeaders (a compromised wallet process holds this
    proxy): a negative start, the largest count the schema can carry, a start at the largest
    height. The node refuses the first, answers at most MAX_GET_HEADERS headers and nothing
    past its tip, and answers the honest call that follows on the same connection."""
    env = make_env("ipc")
    while env.cm.tip.height < MAX_GET_HEADERS + 100:      # more than one answer can hold
        env.mine()

    async def use(init: Any) -> dict[str, Any]:
        chain = await init.make_chain()
        seen: dict[str, Any] = {}
        try:
            await chain.get_headers(-1, 5)
            seen["negative"] = None
        except (ChainError, IpcError) as exc:
            seen["negative"] = str(exc)
        seen["largest_count"] = len(await chain.get_headers(0, 2**32 - 1))
        seen["largest_start"] = await chain.get_headers(2**31 - 1, 2**32 - 1)
        seen["honest"] = await chain.get_headers(100, 5)
        return seen

    seen = run(over_ipc(env, use, env.chain))
    assert seen["negative"] is not None and "negative argument" in seen["negative"], seen["negative"]
    assert seen["largest_count"] == MAX_GET_HEADERS * 80
    assert seen["largest_start"] == b""
    expected = b"".join(env.cm.block_at_height(h).header.serialized for h in range(100, 105))  # type: ignore[union-attr]
    assert seen["honest"] == expected
