"""`NodeChain`: the `Chain` interface (components/interfaces/chain.py) implemented in process,
over the node's ChainManager and Mempool.

CleanCoind hands a NodeChain to its wallet directly; CleanCoin-node serves the same object
over IPC (`ProcessInit(log, chain_factory=...)`), so there is one implementation of the
node's side of the interface.

Notifications go through the node's one `NotificationHub` (notifications.py): it listens to
the chain and the mempool once, logs each event once, and each `handle_notifications` is a
subscription that delivers past its cursor, in chain order, with the bounds of
`FanoutLimits` (subscribers per NodeChain, i.e. per IPC connection; the shared log; bytes in
flight per connection). A new subscription first gets the mempool's transactions.

RPC registration (`register_rpc`) is a capability: only a NodeChain made with a registrar
(the node's own wallet process, see wallet_router.py) takes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..interfaces.chain import (
    MAX_GET_HEADERS, BlockInfo, BroadcastResult, ChainError, ChainNotifications, Handler, RpcHandler, RpcMethodInfo,
)
from .chain import ChainManager
from .mempool import Mempool, MempoolReject
from .notifications import FanoutLimits, Group, NotificationHub
from ..common.primitives import Transaction

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


class NodeChain:
    """The node's `Chain`; see the module docstring."""

    def __init__(self, chain: ChainManager, mempool: Mempool, announce: AnnounceFn | None = None,
                 rpc_registrar: RpcRegistrar | None = None, hub: NotificationHub | None = None,
                 limits: FanoutLimits | None = None) -> None:
        """`hub`: the node's NotificationHub; without one this NodeChain makes its own when
        first asked for notifications (and closes it with itself)."""
        self._chain = chain
        self._mempool = mempool
        self._announce = announce
        self._rpc_registrar = rpc_registrar
        self._hub = hub
        self._own_hub = hub is None
        self._group = Group(limits or (hub.limits if hub is not None else FanoutLimits()))
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

    async def get_headers(self, start_height: int, count: int) -> bytes:
        if start_height < 0 or count < 0:
            raise ChainError(f"get_headers({start_height}, {count}): negative argument")
        # One consistent slice of the active chain, as get_blocks (no await in between).
        out = bytearray()
        for height in range(start_height, start_height + min(count, MAX_GET_HEADERS)):
            idx = self._chain.block_at_height(height)
            if idx is None:
                break
            out += idx.header.serialized
        return bytes(out)

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
        if self._closed:
            raise ChainError("this Chain is closed")
        if self._hub is None:
            self._hub = NotificationHub(self._chain, self._mempool, self._group.limits)
        return await self._hub.subscribe(notifications, self._group)

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
        for sub in list(self._group.members):
            sub.close()
        registrations, self._rpc_registrations = self._rpc_registrations, []
        for registration in registrations:
            await registration.disconnect()
        if self._own_hub and self._hub is not None:
            self._hub.close()


def make_chain(node: Any, rpc_registrar: RpcRegistrar | None = None) -> NodeChain:
    """The Chain of a started `NodeContext` (components/node/node.py): its chain, its mempool, and
    relay through its P2P layer when it has one (looked up per call: P2P stops before the
    chain closes)."""
    if node.chain is None or node.mempool is None:
        raise ChainError("the node is not started")

    def announce(txid: bytes) -> None:
        if node.p2p is not None:
            node.p2p.announce_tx(txid)

    return NodeChain(node.chain, node.mempool, announce, rpc_registrar, getattr(node, "notifications", None))
