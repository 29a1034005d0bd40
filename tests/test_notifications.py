"""The notification hub (components/node/notifications.py) on a real regtest chain and mempool:
one shared log whatever the number of subscribers, the per-connection bound, slow receivers
dropped when the log is full, bytes in flight per connection, and the mempool as it is
delivered to a new subscriber before handle_notifications returns. The functional test
tests/functional/test_ipc_trust.py floods a real CleanCoin-node over IPC."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cleancoin.components.interfaces.chain import ChainError, ChainEvent
from cleancoin.components.common.amount import COIN
from cleancoin.components.node.chain import ChainManager
from cleancoin.components.node.chain_binding import NodeChain
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.keys import PrivateKey, sign_transaction
from cleancoin.components.node.mempool import Mempool
from cleancoin.components.node.mining import mine_block
from cleancoin.components.node.node import ChainViewAdapter, MempoolUpdater
from cleancoin.components.node.notifications import FanoutLimits, NotificationHub
from cleancoin.components.common.primitives import Block, OutPoint, Transaction, TxIn, TxOut

P = REGTEST
NOW = 2_100_000_000
KEY = PrivateKey(hashlib.sha256(b"notifications key").digest())


class Env:
    def __init__(self, path: Path) -> None:
        self.cm = ChainManager(P, str(path / "chain.sqlite"), now=lambda: NOW)
        self.mempool = Mempool(P, ChainViewAdapter(self.cm))
        self.cm.add_listener(MempoolUpdater(self.mempool))
        for _ in range(103):          # coinbases 1 to 3 are mature
            self.mine()

    def mine(self) -> Block:
        tip = self.cm.tip
        block = mine_block(tip.header, tip.height + 1, KEY.public_key.pkh, P, tip.header.time + 600,
                           self.cm.next_bits(tip))
        self.cm.accept_block(block)
        return block

    def spend(self, height: int) -> Transaction:
        block = self.cm.get_block(self.cm.block_at_height(height).hash)   # type: ignore[union-attr]
        assert block is not None
        tx = Transaction(1, (TxIn(OutPoint(block.txs[0].txid, 0)),), (TxOut(50 * COIN - 10_000, KEY.public_key.pkh),))
        return sign_transaction(tx, [KEY])


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.cm.close()


class Recorder:
    """Records (kind, height or txid) of every event; `stall` makes every callback wait."""

    def __init__(self, stall: asyncio.Event | None = None) -> None:
        self.events: list[tuple[str, Any]] = []
        self.stall = stall
        self.calls = 0

    async def chain_events(self, events: list[ChainEvent]) -> None:
        self.calls += 1
        if self.stall is not None:
            await self.stall.wait()
        for e in events:
            key = e.height if e.kind.startswith("block") else (
                Transaction.from_bytes(e.data).txid if e.kind == "transaction_added_to_mempool" else e.data)
            self.events.append((e.kind, key))

    async def block_connected(self, block: bytes, height: int) -> None:
        await self.chain_events([ChainEvent("block_connected", block, height)])

    async def block_disconnected(self, block: bytes, height: int) -> None:
        await self.chain_events([ChainEvent("block_disconnected", block, height)])

    async def transaction_added_to_mempool(self, tx: bytes) -> None:
        await self.chain_events([ChainEvent("transaction_added_to_mempool", tx)])

    async def transaction_removed_from_mempool(self, txid: bytes, reason: str) -> None:
        await self.chain_events([ChainEvent("transaction_removed_from_mempool", txid, reason=reason)])


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_many_subscribers_share_one_log_and_each_gets_everything(env: Env) -> None:
    async def run() -> None:
        hub = NotificationHub(env.cm, env.mempool)
        chains = [NodeChain(env.cm, env.mempool, hub=hub) for _ in range(3)]
        recorders = [Recorder() for _ in range(30)]
        for i, r in enumerate(recorders):
            await chains[i % 3].handle_notifications(r)
        blocks = [env.mine() for _ in range(5)]
        await settle()
        expected = [("block_connected", 103 + i) for i in range(1, 6)]
        assert all(r.events == expected for r in recorders)
        assert len(hub._log) == 0                    # everyone passed everything: nothing kept
        assert len(hub._blocks) == 5 and hub._blocks[blocks[0].hash] is blocks[0].to_bytes()
        for c in chains:
            await c.close()
        hub.close()

    asyncio.run(run())


def test_subscribers_per_connection_are_bounded(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        hub = NotificationHub(env.cm, env.mempool, FanoutLimits(max_subscribers=4))
        chain, other = NodeChain(env.cm, env.mempool, hub=hub), NodeChain(env.cm, env.mempool, hub=hub)
        for _ in range(4):
            await chain.handle_notifications(Recorder())
        for _ in range(3):
            with pytest.raises(ChainError, match="at most 4 notification registrations per connection"):
                await chain.handle_notifications(Recorder())
        await other.handle_notifications(Recorder())     # another connection has its own bound
        handler = await other.handle_notifications(Recorder())
        await handler.disconnect()
        await other.handle_notifications(Recorder())     # a disconnect frees a place
        hub.close()

    with caplog.at_level(logging.WARNING, "cleancoin.node"):
        asyncio.run(run())
    assert len([r for r in caplog.records if "refused a registration" in r.message]) == 1


def test_a_stuck_receiver_is_dropped_when_the_log_is_full_and_the_others_go_on(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        hub = NotificationHub(env.cm, env.mempool, FanoutLimits(max_log_events=10))
        chain = NodeChain(env.cm, env.mempool, hub=hub)
        stuck = Recorder(stall=asyncio.Event())
        handler = await chain.handle_notifications(stuck)
        healthy = Recorder()
        await chain.handle_notifications(healthy)
        for _ in range(15):
            env.mine()
            await settle()
        assert len(healthy.events) == 15
        assert stuck.calls == 1 and handler.closed and handler.dropped
        assert len(hub._log) == 0                    # the stuck one no longer holds the log
        stuck.stall.set()                            # type: ignore[union-attr]
        hub.close()

    with caplog.at_level(logging.WARNING, "cleancoin.node"):
        asyncio.run(run())
    assert any("dropped a receiver" in r.message for r in caplog.records)


def test_bytes_in_flight_per_connection_are_bounded(env: Env) -> None:
    async def run() -> None:
        hub = NotificationHub(env.cm, env.mempool, FanoutLimits(max_inflight_bytes=1))
        chain = NodeChain(env.cm, env.mempool, hub=hub)
        gate = asyncio.Event()
        first, second = Recorder(stall=gate), Recorder()
        await chain.handle_notifications(first)
        await chain.handle_notifications(second)
        env.mempool.accept(env.spend(1))             # a transaction: bytes in flight
        await settle()
        assert first.calls == 1 and second.calls == 0    # waits: the connection's budget is used
        gate.set()
        await settle()
        assert len(first.events) == len(second.events) == 1
        hub.close()

    asyncio.run(run())


def test_a_new_subscriber_gets_the_mempool_before_handle_notifications_returns(env: Env) -> None:
    async def run() -> None:
        hub = NotificationHub(env.cm, env.mempool, FanoutLimits(max_batch_events=2))
        txs = [env.spend(h) for h in (1, 2, 3)]
        for tx in txs:
            env.mempool.accept(tx)
        chain = NodeChain(env.cm, env.mempool, hub=hub)
        recorder = Recorder()
        await chain.handle_notifications(recorder)
        assert recorder.events == [("transaction_added_to_mempool", tx.txid) for tx in txs]
        assert recorder.calls == 2                   # batched: 2 + 1
        block = env.mine()
        await settle()
        assert recorder.events[3:] == [("block_connected", 104)]
        assert len(block.txs) == 1                   # mine_block leaves the pool alone here
        hub.close()

    asyncio.run(run())


def test_a_wallet_beyond_the_bound_does_not_load_and_leaves_nothing_behind(env: Env, tmp_path: Path) -> None:
    """A wallet follows the chain through one registration: with the bound at 1, a second
    wallet fails to load with the bound's message, and loads once the first is unloaded."""
    from cleancoin.components.wallet.wallet import WalletManager

    async def run() -> None:
        chain = NodeChain(env.cm, env.mempool, limits=FanoutLimits(max_subscribers=1))
        loader = WalletManager(tmp_path, chain, P.name)
        await loader.create("one")
        with pytest.raises(ChainError, match="at most 1 notification registrations per connection"):
            await loader.create("two")
        assert loader.names() == ["one"]
        await loader.unload("one")
        await loader.load("two")
        assert loader.names() == ["two"]
        await loader.close_all()
        await chain.close()

    asyncio.run(run())


def test_a_subscription_waiting_for_room_ends_when_disconnected(env: Env) -> None:
    async def run() -> None:
        hub = NotificationHub(env.cm, env.mempool, FanoutLimits(max_inflight_bytes=1))
        chain = NodeChain(env.cm, env.mempool, hub=hub)
        hang = Recorder(stall=asyncio.Event())
        await chain.handle_notifications(hang)
        waiting = await chain.handle_notifications(Recorder())
        env.mempool.accept(env.spend(1))
        await settle()
        task = waiting._task
        assert task is not None and not task.done()
        await waiting.disconnect()
        await settle()
        assert task.done() and len(hub._log) == 1        # only the hanging receiver holds it
        hub.close()

    asyncio.run(run())
