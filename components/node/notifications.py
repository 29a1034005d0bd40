"""Chain and mempool notifications, fanned out to every `handle_notifications` subscriber with
bounded memory.

One `NotificationHub` per node is the only chain listener (`ChainManager.add_listener`) and
mempool listener (`Mempool.add_listener`) that notifications need, however many subscribers
there are. It appends each event once to a shared log; each `Subscription` is a cursor into
that log and a task that delivers what lies past its cursor to its receiver, one call at a
time, as a `chainEvents` batch when several are waiting. Events every subscriber has passed
leave the log. So an event costs the same memory for 1 or 1000 subscribers: a block event
holds the block's hash, and the serialised block is shared (the `Block` object caches its
serialisation; the hub keeps the last `block_cache` ones and reads older ones from storage
when a lagging subscriber needs them), a transaction event shares the transaction's cached
bytes.

Bounds (`FanoutLimits`, docs/ipc.md):
- subscribers per connection (per `NodeChain`): more are refused;
- the log: at most `max_log_events` events and `max_log_bytes` bytes of transactions. When
  it is full the oldest event goes, and a subscriber that has not received it yet (its
  receiver is that slow, or never returns) is dropped, with a log line;
- bytes sent but not yet answered, per connection (`max_inflight_bytes`): a receiver that
  does not read its socket holds at most that much in the node's send queue.

Order. A subscriber sees a block event before the mempool events it caused: block_connected,
then the "block" and "conflict" removals of that block; block_disconnected, then the
transactions taken back ("added") and those dropped ("reorg"). The node makes the pool follow
the chain with its own chain listener (node.MempoolUpdater, registered before the hub), which
means the pool's events for a block arrive *before* the chain tells the hub about the block.
The hub therefore remembers the tip of the last chain event it logged; a mempool event that
arrives while the chain's tip differs from it belongs to a chain event still on its way, and
is held back until that event is logged (a check scheduled on the loop also releases it once
the tip is the one last seen, for a tip read in a race with another thread). With the
opposite listener order the events arrive in the right order already, and pass straight
through.

The mempool as it is. A new subscription first receives `transaction_added_to_mempool` for
every transaction in the pool at that moment (parents first; taken with the pool held still,
so nothing falls between that picture and the log), as bitcoind's wallets get them with
`requestMempoolTransactions`; `handle_notifications` returns once those are delivered. A
wallet that loads therefore knows a payment made to it while it was unloaded, or while its
process restarted.

Listeners may be called from another thread (an RPC worker): the hub's state is guarded by
a lock and the loop is woken thread-safely.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from ..interfaces.chain import ChainError, ChainEvent, ChainNotifications
from ..ipc.errors import IpcDisconnected
from .chain import BlockIndex, ChainManager
from .mempool import Mempool
from ..common.primitives import Block, Transaction

log = logging.getLogger("cleancoin.node")

BLOCK_CONNECTED = "block_connected"
BLOCK_DISCONNECTED = "block_disconnected"
TX_ADDED = "transaction_added_to_mempool"
TX_REMOVED = "transaction_removed_from_mempool"


@dataclass(frozen=True)
class FanoutLimits:
    """See the module docstring; the defaults and why are in docs/ipc.md."""

    max_subscribers: int = 128
    max_log_events: int = 100_000
    max_log_bytes: int = 64 * 1024 * 1024
    max_batch_events: int = 1000
    max_batch_bytes: int = 16_000_000
    max_inflight_bytes: int = 16 * 1024 * 1024
    block_cache: int = 16


@dataclass(frozen=True, slots=True)
class _Event:
    """One logged event. Blocks are logged by hash (`data`); `size` counts what the log keeps
    alive (a transaction's bytes; nothing for a block, whose bytes the hub caches)."""

    kind: str
    data: bytes
    height: int = 0
    reason: str = ""
    size: int = 0


class Group:
    """The subscriptions of one connection (one NodeChain): their number, and the bytes sent
    to their receivers and not yet answered."""

    def __init__(self, limits: FanoutLimits) -> None:
        self.limits = limits
        self.members: set[Subscription] = set()
        self.refused = 0
        self._inflight = 0
        self._room = asyncio.Condition()

    async def acquire(self, size: int) -> None:
        """Wait until `size` more bytes fit in flight (one batch always may, alone)."""
        async with self._room:
            await self._room.wait_for(lambda: self._inflight == 0
                                      or self._inflight + size <= self.limits.max_inflight_bytes)
            self._inflight += size

    async def release(self, size: int) -> None:
        async with self._room:
            self._inflight -= size
            self._room.notify_all()


class NotificationHub:
    """See the module docstring. Create it on the event loop that delivers (a node's)."""

    def __init__(self, chain: ChainManager, mempool: Mempool, limits: FanoutLimits = FanoutLimits()) -> None:
        self._chain = chain
        self._mempool = mempool
        self.limits = limits
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._log: collections.deque[_Event] = collections.deque()
        self._base = 0                 # absolute position of _log[0]
        self._bytes = 0
        self._at: dict[int, set[Subscription]] = {}      # cursor -> subscriptions there
        self._changed = asyncio.Event()
        self._blocks: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self._seen_tip = self._tip_hash()          # tip after the last chain event logged
        self._held: list[_Event] = []              # mempool events awaiting their chain event
        self._recheck_scheduled = False
        self._pool_version = 0                     # counts mempool events: snapshot sharing
        self._snapshot: tuple[int, tuple[Transaction, ...]] = (-1, ())
        self._closed = False
        chain.add_listener(self)
        mempool.add_listener(self)

    @property
    def _end(self) -> int:
        return self._base + len(self._log)

    def close(self) -> None:
        """Stop listening and end every subscription."""
        self._closed = True
        self._chain.remove_listener(self)
        self._mempool.remove_listener(self)
        with self._lock:
            subs = [s for members in self._at.values() for s in members]
        for sub in subs:
            sub.close()

    # ------------------------------------------------------------------ subscribing

    async def subscribe(self, target: ChainNotifications, group: Group) -> "Subscription":
        """A new subscription of `target` (ChainError beyond the group's bound); returns once
        the mempool as it is now has been delivered to it."""
        if self._closed:
            raise ChainError("the node is shutting down")
        if len(group.members) >= group.limits.max_subscribers:
            group.refused += 1
            if group.refused == 1:
                log.warning("chain notifications: refused a registration, at most %d per connection "
                            "(further refusals on this connection are not logged)", group.limits.max_subscribers)
            raise ChainError(f"at most {group.limits.max_subscribers} notification registrations per connection")
        with self._mempool.frozen() as txs:      # no pool event until the cursor is placed
            with self._lock:
                if self._snapshot[0] != self._pool_version:
                    self._snapshot = (self._pool_version, tuple(txs))
                sub = Subscription(self, target, group, self._end, self._snapshot[1])
                self._at.setdefault(sub.cursor, set()).add(sub)
        group.members.add(sub)
        sub.start()
        await sub.snapshot_done.wait()
        if sub.closed and sub.dropped:
            raise ChainError("the receiver was too slow to take the mempool's transactions; dropped")
        return sub

    def _remove(self, sub: "Subscription") -> None:
        with self._lock:
            members = self._at.get(sub.cursor)
            if members is not None:
                members.discard(sub)
                if not members:
                    del self._at[sub.cursor]
            self._trim()
        sub.group.members.discard(sub)
        self._signal_soon()

    # ------------------------------------------------------------------ listeners

    def block_connected(self, block: Block, index: BlockIndex) -> None:
        self._chain_event(index.hash, block, _Event(BLOCK_CONNECTED, block.hash, index.height))

    def block_disconnected(self, block: Block, index: BlockIndex) -> None:
        self._chain_event(index.prev, block, _Event(BLOCK_DISCONNECTED, block.hash, index.height))

    def transaction_added(self, tx: Transaction) -> None:
        raw = tx.to_bytes()
        self._mempool_event(_Event(TX_ADDED, raw, size=len(raw)))

    def transaction_removed(self, txid: bytes, reason: str) -> None:
        self._mempool_event(_Event(TX_REMOVED, txid, reason=reason, size=len(txid)))

    def _chain_event(self, tip: bytes | None, block: Block, event: _Event) -> None:
        """Log a chain event, then the mempool events it caused (held until now)."""
        with self._lock:
            if self._at:          # someone will deliver it: keep its bytes at hand
                self._cache_block(block.hash, block.to_bytes())
            self._seen_tip = tip
            held, self._held = self._held, []
            self._append(event)
            for e in held:
                self._append(e)
        self._signal_soon()

    def _mempool_event(self, event: _Event) -> None:
        tip = self._tip_hash()       # outside our lock: it takes the chain's
        with self._lock:
            self._pool_version += 1
            if tip == self._seen_tip and not self._held:
                self._append(event)
                recheck = False
            else:
                # The chain moved and its event has not reached us yet: it goes first.
                self._held.append(event)
                recheck = not self._recheck_scheduled
                self._recheck_scheduled = True
        if recheck:
            self._defer(self._recheck)
        else:
            self._signal_soon()

    def _recheck(self) -> None:
        """On the loop, once the chain change that held events back is done: if the tip is the
        one last logged, nothing more is coming for them: release them."""
        tip = self._tip_hash()
        with self._lock:
            self._recheck_scheduled = False
            if tip == self._seen_tip:
                held, self._held = self._held, []
                for e in held:
                    self._append(e)
        self._signal()

    # ------------------------------------------------------------------ the log

    def _append(self, event: _Event) -> None:
        """Under the lock. With nobody subscribed the event is dropped at once (_trim)."""
        self._log.append(event)
        self._bytes += event.size
        limits = self.limits
        while self._log and (len(self._log) > limits.max_log_events or self._bytes > limits.max_log_bytes):
            for sub in self._at.pop(self._base, ()):
                sub.drop_lagging(self._end - self._base)
            self._pop()
        self._trim()

    def _pop(self) -> None:
        event = self._log.popleft()
        self._bytes -= event.size
        self._base += 1

    def _trim(self) -> None:
        """Under the lock: drop the events every subscription has passed."""
        while self._log and self._base not in self._at:
            self._pop()

    def read(self, sub: "Subscription") -> list[_Event]:
        """The next batch past `sub`'s cursor (bounded by the limits), or [] when there is none."""
        limits = self.limits
        with self._lock:
            start = sub.cursor - self._base
            if start < 0 or start >= len(self._log):
                return []
            batch: list[_Event] = []
            size = 0
            for i in range(start, min(len(self._log), start + limits.max_batch_events)):
                event = self._log[i]
                size += event.size
                if batch and size > limits.max_batch_bytes:
                    break
                batch.append(event)
            return batch

    def advance(self, sub: "Subscription", count: int) -> None:
        """`sub` has delivered `count` events from its cursor on."""
        with self._lock:
            members = self._at.get(sub.cursor)
            if members is None or sub not in members:
                return        # dropped meanwhile
            members.discard(sub)
            if not members:
                del self._at[sub.cursor]
            sub.cursor += count
            self._at.setdefault(sub.cursor, set()).add(sub)
            self._trim()

    def has_more(self, sub: "Subscription") -> bool:
        with self._lock:
            return sub.cursor < self._end

    async def wait_for_more(self, sub: "Subscription") -> None:
        """Until the log holds something past `sub`'s cursor, or `sub` is closed."""
        while not sub.closed:
            with self._lock:
                if sub.cursor < self._end:
                    return
                changed = self._changed
            await changed.wait()

    async def wait_delivered(self, poll: float = 0.01) -> None:
        """syncwithvalidationinterfacequeue: until every subscription has delivered (and its
        receiver answered) the events logged before this call, the mempool events held back
        for their block included. Polls: delivery does not signal each step."""
        with self._lock:
            target = self._end + len(self._held)
        while True:
            with self._lock:
                behind = any(members and cursor < target for cursor, members in self._at.items())
                held = bool(self._held)
            if not behind and not held:
                return
            await asyncio.sleep(poll)

    # ------------------------------------------------------------------ payloads

    def _cache_block(self, block_hash: bytes, raw: bytes) -> None:
        self._blocks[block_hash] = raw
        self._blocks.move_to_end(block_hash)
        while len(self._blocks) > self.limits.block_cache:
            self._blocks.popitem(last=False)

    def block_bytes(self, block_hash: bytes) -> bytes:
        """The serialised block (shared: cached, or read once from storage and cached)."""
        with self._lock:
            raw = self._blocks.get(block_hash)
        if raw is not None:
            return raw
        block = self._chain.get_block(block_hash)
        if block is None:
            raise ChainError(f"block {block_hash[::-1].hex()} is not stored")
        raw = block.to_bytes()
        with self._lock:
            self._cache_block(block_hash, raw)
        return raw

    def payload(self, event: _Event) -> ChainEvent:
        """The event as a receiver gets it."""
        if event.kind in (BLOCK_CONNECTED, BLOCK_DISCONNECTED):
            return ChainEvent(event.kind, self.block_bytes(event.data), event.height)
        return ChainEvent(event.kind, event.data, event.height, event.reason)

    # ------------------------------------------------------------------ waking the loop

    def _signal(self) -> None:
        """On the loop: wake every subscription waiting for events."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _signal_soon(self) -> None:
        self._call_soon(self._signal)

    def _defer(self, fn: Any) -> None:
        """Run `fn` on the loop later (never now: the caller may hold locks `fn` takes)."""
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:     # the loop is closed: nobody will deliver anything anyway
            pass

    def _call_soon(self, fn: Any) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            fn()
            return
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:     # the loop is closed: nobody will deliver anything anyway
            pass

    def _tip_hash(self) -> bytes | None:
        try:
            return self._chain.tip.hash
        except IndexError:
            return None


@dataclass(eq=False)
class Subscription:
    """One `handle_notifications`: a cursor into the hub's log, the mempool transactions still
    to deliver first, the delivery task; and the `Handler` given back to the caller."""

    hub: NotificationHub
    target: ChainNotifications
    group: Group
    cursor: int
    snapshot: tuple[Transaction, ...]
    closed: bool = False
    dropped: bool = False
    snapshot_done: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _waiting_for_room: bool = False      # in Group.acquire: safe to cancel there

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._deliver(), name="chain-notifications")

    # Handler
    async def disconnect(self) -> None:
        # Not a cancel of the delivery task: the caller may be inside one of its callbacks.
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.snapshot = ()
            self.snapshot_done.set()
            self.hub._remove(self)
            if self._waiting_for_room and self._task is not None:
                # Waiting for the connection's budget (another receiver of it hangs): no
                # callback of ours is running, so the task can simply end.
                self._task.cancel()

    def drop_lagging(self, behind: int) -> None:
        """Under the hub's lock: the log's oldest event goes and this subscription has not
        received it. It ends (the hub has already forgotten its cursor)."""
        log.warning("chain notifications: dropped a receiver %d events behind (the log holds at most "
                    "%d events, %d bytes)", behind, self.hub.limits.max_log_events, self.hub.limits.max_log_bytes)
        self.closed = self.dropped = True
        self.snapshot = ()
        self.group.members.discard(self)
        self.hub._defer(self.snapshot_done.set)
        self.hub._defer(self.hub._signal)

    async def _deliver(self) -> None:
        try:
            await self._deliver_snapshot()
            self.snapshot_done.set()
            while not self.closed:
                events = self.hub.read(self)
                if not events:
                    await self.hub.wait_for_more(self)
                    continue
                await self._send([self.hub.payload(e) for e in events], sum(e.size for e in events))
                self.hub.advance(self, len(events))
        except _ReceiverGone:
            log.info("chain notifications: receiver gone, unregistering")
            self.close()
        except ChainError as exc:       # a block the log names is not stored: cannot go on
            log.error("chain notifications: %s; dropping the receiver", exc)
            self.close()

    async def _deliver_snapshot(self) -> None:
        limits = self.hub.limits
        i = 0
        while i < len(self.snapshot) and not self.closed:
            batch: list[ChainEvent] = []
            size = 0
            while i < len(self.snapshot) and len(batch) < limits.max_batch_events:
                raw = self.snapshot[i].to_bytes()
                if batch and size + len(raw) > limits.max_batch_bytes:
                    break
                batch.append(ChainEvent(TX_ADDED, raw))
                size += len(raw)
                i += 1
            await self._send(batch, size)
        self.snapshot = ()

    async def _send(self, events: list[ChainEvent], size: int) -> None:
        """Deliver `events`: one `chain_events` call for several (a receiver without it gets
        the single-event methods, one call each); a failing callback is logged and the next
        goes on."""
        self._waiting_for_room = True
        try:
            await self.group.acquire(size)
        finally:
            self._waiting_for_room = False
        try:
            if len(events) > 1 and hasattr(self.target, "chain_events"):
                await self._call(f"batch of {len(events)}", self.target.chain_events, events)
            else:
                for event in events:
                    await self._call(event.kind, getattr(self.target, event.kind), *event.args())
        finally:
            await self.group.release(size)

    @staticmethod
    async def _call(name: str, method: Any, *args: Any) -> None:
        try:
            await method(*args)
        except IpcDisconnected:
            raise _ReceiverGone() from None
        except Exception:  # noqa: BLE001 - a receiver's failing callback must not stop later events
            log.exception("chain notification %s failed", name)


class _ReceiverGone(Exception):
    pass
