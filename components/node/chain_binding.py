"""`NodeChain`: the `Chain` interface (components/chain_interface.py) implemented in process,
over the node's ChainManager and Mempool.

CleanCoind hands a NodeChain to its wallet directly; CleanCoin-node serves the same object
over IPC (`ProcessInit(log, chain_factory=...)`), so there is one implementation of the
node's side of the interface.

Notifications. Every `handle_notifications` registration is both a chain listener
(`ChainManager.add_listener`) and a mempool listener (`Mempool.add_listener`), so it hears every
block connected or disconnected and every transaction entering or leaving the pool, whoever
caused it (`broadcast_transaction`, `sendrawtransaction`, P2P relay, blocks, reorganisations,
evictions), with the pool's removal reason ("block", "conflict", "reorg", "eviction"). Both
listeners are called synchronously (the chain's inside `accept_block`, after each commit; the
pool's after each change), while a `ChainNotifications` callback is a coroutine (and over IPC a
round trip to the wallet). So every registration pushes both kinds of event into one queue, and
one task per registration delivers them one by one, awaiting each: the chain never waits for a
wallet, and a slow wallet delays only itself.

Order. The wallet sees a block event before the mempool events it caused: block_connected, then
the "block" and "conflict" removals of that block; block_disconnected, then the transactions
taken back ("added") and those dropped ("reorg"). The node makes the pool follow the chain with
its own chain listener (node.MempoolUpdater, registered when the node starts, so before any
registration here), which means the pool's events for a block arrive at a registration *before*
the chain tells it about the block. A registration therefore remembers the tip of the last chain
event it queued; a mempool event that arrives while the chain's tip differs from it belongs to
a chain event still on its way, and is held back until that event is queued (a check
scheduled on the loop also releases it once the tip is the one last seen, for a tip read in a
race with another thread). With the opposite listener order the events arrive in the right
order already, and pass straight through. Mempool events between blocks are queued as they
come (behind any still held, so their order is kept).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..chain_interface import (
    BlockInfo, BroadcastResult, ChainError, ChainEvent, ChainNotifications, Handler, RpcHandler, RpcMethodInfo,
)
from ..ipc.errors import IpcDisconnected
from .chain import BlockIndex, ChainManager
from .mempool import Mempool, MempoolReject
from .primitives import Block, Transaction

log = logging.getLogger("cleancoin.node")

#: get_blocks stops adding blocks once the answer holds this many bytes (at least one block is
#: always returned). 16 MB stays far below the IPC traversal limit (64 MiB per message) and
#: still batches hundreds of full blocks per round trip.
MAX_GET_BLOCKS_BYTES: int = 16_000_000

#: Optional P2P relay: called with the txid of a transaction the pool just accepted.
AnnounceFn = Callable[[bytes], Any]

#: Takes `register_rpc` calls: (methods, handler) -> the registration's Handler
#: (components/node/wallet_router.py).
RpcRegistrar = Callable[[list[RpcMethodInfo], RpcHandler], Handler]

#: A batch of notifications holds at most this many events, or (past its first event) this
#: many bytes of blocks and transactions: far below the IPC traversal limit.
MAX_BATCH_EVENTS: int = 1000
MAX_BATCH_BYTES: int = 16_000_000


class NodeChain:
    """The node's `Chain`; see the module docstring."""

    def __init__(self, chain: ChainManager, mempool: Mempool, announce: AnnounceFn | None = None,
                 rpc_registrar: RpcRegistrar | None = None) -> None:
        self._chain = chain
        self._mempool = mempool
        self._announce = announce
        self._rpc_registrar = rpc_registrar
        self._registrations: set[_Registration] = set()
        self._rpc_registrations: list[Handler] = []
        self._closed = False

    # ------------------------------------------------------------------ queries

    async def get_height(self) -> int:
        return self._chain.height      # len(active chain) - 1: -1 only for an empty chain

    async def get_block_hash(self, height: int) -> bytes:
        idx = self._chain.block_at_height(height)
        if idx is None:
            raise ChainError(f"height {height} is out of range (tip at {self._chain.height})")
        return idx.hash

    async def get_block_header_info(self, block_hash: bytes) -> BlockInfo:
        idx = self._chain.get_index(block_hash)
        if idx is None:
            raise ChainError(f"unknown block {block_hash[::-1].hex()}")
        return BlockInfo(hash=idx.hash, height=idx.height, time=idx.time, prev_hash=idx.prev,
                         in_active_chain=self._chain.is_in_active_chain(idx.hash))

    async def get_blocks(self, start_height: int, count: int) -> list[bytes]:
        if start_height < 0 or count < 0:
            raise ChainError(f"get_blocks({start_height}, {count}): negative argument")
        # No await inside the loop: the chain cannot change under us (it runs on this loop),
        # so the batch is one consistent slice of the active chain.
        out: list[bytes] = []
        total = 0
        for height in range(start_height, start_height + count):
            idx = self._chain.block_at_height(height)
            if idx is None:
                break
            block = self._chain.get_block(idx.hash)
            if block is None:      # active blocks always have data; a broken store must not
                raise ChainError(f"block {idx.hash_hex} at height {height} is not stored")
            raw = block.to_bytes()
            if out and total + len(raw) > MAX_GET_BLOCKS_BYTES:
                break
            out.append(raw)
            total += len(raw)
        return out

    async def find_fork(self, locator: list[bytes]) -> int:
        return self._chain.find_fork(list(locator)).height

    async def relay_min_fee(self) -> int:
        return self._mempool.min_relay_fee_per_kb

    async def is_in_mempool(self, txid: bytes) -> bool:
        return txid in self._mempool

    # ------------------------------------------------------------------ broadcast

    async def broadcast_transaction(self, tx: bytes, max_fee: int) -> BroadcastResult:
        try:
            parsed = Transaction.from_bytes(tx)
        except Exception:  # noqa: BLE001 - any parse failure is the caller's bad input
            return BroadcastResult(False, b"", "TX decode failed")
        txid = parsed.txid
        if txid in self._mempool:
            # bitcoind: already in our pool is success; announce again (a peer may lack it).
            self._relay(txid)
            return BroadcastResult(True, txid, "")
        fee = self._mempool.fee_of(parsed)
        if max_fee and fee is not None and fee > max_fee:
            return BroadcastResult(False, txid, "max-fee-exceeded")
        try:
            self._mempool.accept(parsed)
        except MempoolReject as rej:
            return BroadcastResult(False, txid, rej.reason)
        self._relay(txid)       # the pool itself tells the registrations (module docstring)
        return BroadcastResult(True, txid, "")


    def _relay(self, txid: bytes) -> None:
        if self._announce is None:
            return
        try:
            self._announce(txid)
        except Exception:  # noqa: BLE001 - relay is best effort; the pool has the tx
            log.exception("announcing transaction %s failed", txid[::-1].hex())

    # ------------------------------------------------------------------ notifications

    async def handle_notifications(self, notifications: ChainNotifications) -> Handler:
        reg = _Registration(self, notifications, asyncio.get_running_loop())
        self._registrations.add(reg)
        self._chain.add_listener(reg)
        self._mempool.add_listener(reg)
        return reg

    async def register_rpc(self, methods: list[RpcMethodInfo], handler: RpcHandler) -> Handler:
        # Only a Chain made with a registrar (the node's own wallet process, see
        # wallet_router.py) may register; the registrar checks and may refuse.
        if self._rpc_registrar is None:
            raise ChainError("this node takes no RPC registrations")
        if self._closed:
            raise ChainError("this Chain is closed")
        registration = self._rpc_registrar(list(methods), handler)
        self._rpc_registrations.append(registration)
        return registration

    async def close(self) -> None:
        """End every registration made through this object: its IPC connection is gone, so
        nobody is left to disconnect them (components/ipc/connection.py calls this)."""
        self._closed = True
        for reg in list(self._registrations):
            reg._close()
        registrations, self._rpc_registrations = self._rpc_registrations, []
        for registration in registrations:
            await registration.disconnect()

    def _unregister(self, reg: _Registration) -> None:
        self._registrations.discard(reg)
        self._chain.remove_listener(reg)
        self._mempool.remove_listener(reg)

    def _tip_hash(self) -> bytes | None:
        """Hash of the active tip (None for an empty chain)."""
        try:
            return self._chain.tip.hash
        except IndexError:
            return None


class _Registration:
    """One `handle_notifications`: a chain and mempool listener, its event queue, its delivery
    task; and the `Handler` given back to the caller. See the module docstring for the order."""

    def __init__(self, owner: NodeChain, target: ChainNotifications, loop: asyncio.AbstractEventLoop) -> None:
        self._owner = owner
        self._target = target
        self._loop = loop
        self._queue: collections.deque[tuple[str, tuple[Any, ...]]] = collections.deque()
        self._wake = asyncio.Event()
        self._closed = False
        # Listeners may be called from another thread (an RPC worker); this guards the
        # ordering state below and the queue's order.
        self._lock = threading.Lock()
        self._seen_tip = owner._tip_hash()      # tip after the last chain event queued
        self._held: list[tuple[str, tuple[Any, ...]]] = []   # mempool events awaiting theirs
        self._recheck_scheduled = False
        self._task = loop.create_task(self._deliver(), name="chain-notifications")

    # Chain listener: called synchronously after each commit, maybe before the wallet has
    # seen the previous event; only queue here.
    def block_connected(self, block: Block, index: BlockIndex) -> None:
        self._chain_event(index.hash, "block_connected", block.to_bytes(), index.height)

    def block_disconnected(self, block: Block, index: BlockIndex) -> None:
        self._chain_event(index.prev, "block_disconnected", block.to_bytes(), index.height)

    def _chain_event(self, tip: bytes | None, name: str, *args: Any) -> None:
        """Queue a chain event, then the mempool events it caused (held until now)."""
        with self._lock:
            self._seen_tip = tip
            held, self._held = self._held, []
            self._push(name, *args)
            for event, event_args in held:
                self._push(event, *event_args)

    # Mempool listener: called after each change of the pool, under its lock.
    def transaction_added(self, tx: Transaction) -> None:
        self._mempool_event("transaction_added_to_mempool", tx.to_bytes())

    def transaction_removed(self, txid: bytes, reason: str) -> None:
        self._mempool_event("transaction_removed_from_mempool", txid, reason)

    def _mempool_event(self, name: str, *args: Any) -> None:
        tip = self._owner._tip_hash()       # outside our lock: it takes the chain's
        with self._lock:
            if tip == self._seen_tip and not self._held:
                self._push(name, *args)
                return
            # The chain moved and its event has not reached us yet: it goes first.
            self._held.append((name, args))
            if self._recheck_scheduled or self._closed:
                return
            self._recheck_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._recheck)
        except RuntimeError:    # the loop is closed: nobody will deliver anything anyway
            pass

    def _recheck(self) -> None:
        """On the loop, once the chain change that held events back is done: if the tip is the
        one last queued, nothing more is coming for them (usually the chain event released
        them already; else the tip was read in a race with another thread): release them."""
        tip = self._owner._tip_hash()
        with self._lock:
            self._recheck_scheduled = False
            if tip == self._seen_tip:
                held, self._held = self._held, []
                for event, event_args in held:
                    self._push(event, *event_args)

    def _push(self, name: str, *args: Any) -> None:
        if self._closed:
            return
        self._queue.append((name, args))
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._wake.set()
        else:   # a chain change from another thread (an RPC worker): wake the loop safely
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _deliver(self) -> None:
        while not self._closed:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take_batch()
            name = batch[0][0] if len(batch) == 1 else f"batch of {len(batch)}"
            try:
                if len(batch) == 1:
                    await getattr(self._target, batch[0][0])(*batch[0][1])
                else:
                    await self._target.chain_events([_event(kind, args) for kind, args in batch])
            except IpcDisconnected:
                # The wallet is gone: nobody will call disconnect, so end the registration here.
                log.info("chain notifications: receiver gone, unregistering")
                self._close()
            except Exception:  # noqa: BLE001 - a wallet's failing callback must not stop later events
                log.exception("chain notification %s failed", name)

    def _take_batch(self) -> list[tuple[str, tuple[Any, ...]]]:
        """What has queued up since the last delivery, bounded (see MAX_BATCH_*). A receiver
        without `chain_events` gets one event at a time."""
        batch = [self._queue.popleft()]
        if not hasattr(self._target, "chain_events"):
            return batch
        size = len(batch[0][1][0])
        while self._queue and len(batch) < MAX_BATCH_EVENTS:
            size += len(self._queue[0][1][0])
            if size > MAX_BATCH_BYTES:
                break
            batch.append(self._queue.popleft())
        return batch

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.clear()
            with self._lock:
                self._held.clear()
            self._owner._unregister(self)
            self._wake.set()      # let the delivery task see _closed and end

    # Handler
    async def disconnect(self) -> None:
        # Not a cancel of the delivery task: the caller may be inside one of its callbacks.
        self._close()


def _event(kind: str, args: tuple[Any, ...]) -> ChainEvent:
    if kind == "transaction_removed_from_mempool":
        return ChainEvent(kind, args[0], reason=args[1])
    return ChainEvent(kind, *args)


def make_chain(node: Any, rpc_registrar: RpcRegistrar | None = None) -> NodeChain:
    """The Chain of a started `Node` (components/node/node.py): its chain, its mempool, and
    relay through its P2P layer when it has one (looked up per call: P2P stops before the
    chain closes)."""
    if node.chain is None or node.mempool is None:
        raise ChainError("the node is not started")

    def announce(txid: bytes) -> None:
        if node.p2p is not None:
            node.p2p.announce_tx(txid)

    return NodeChain(node.chain, node.mempool, announce, rpc_registrar)
