"""One P2P connection: framing on a stream, an outgoing queue, and the per-peer state the node
keeps (handshake, statistics, inventory the peer knows, blocks requested from it).

The protocol logic lives in node.py; a Peer only moves frames and reports each decoded
message to its `PeerHandler`.

Why a writer task and an outbox rather than writing from the handlers: a handler must never
wait for *this or another* peer's socket to drain. If two nodes each blocked in a write
to the other while neither read, both would hang for good (a block sent one way while a
relay inv goes the other). Handlers only append to the outbox; the writer task alone waits
on the socket. Requested data (getdata) is produced lazily by the writer, one block at a
time when the outbox is empty, so a getdata for 50000 blocks never sits in memory at once;
and like Bitcoin the reader stops taking messages from a peer while it still owes that peer
data or its outbox is over SEND_BUFFER_LIMIT, which bounds what one peer can make us queue.
Reader and writer yield to the event loop after every message, so that no peer keeps the
others (and RPC, on the same loop) waiting; and since 12-07 what a peer's messages cost the
loop's thread is charged to its address group's CPU budget (cpu_budget.py: an IPv4 address,
an IPv6 /64), which once spent stops the reader until it refills: turns alone share the
messages, not the CPU. Since 12-08 so is each turn of serving what it asked for (getdata),
which waits for that budget too.
What it asked for waits in an `InvQueue`, as the 36-byte wire entries (bitcoind's CInv): a
max-size getdata from a peer that stops reading holds 1.8 MB, not 6.9 MB of Python objects.

Before the handshake only version and verack are decoded (bitcoind: "non-version message
before version handshake" is dropped undecoded): anything else costs its checksum, not a
parse of up to 2 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .bloom import RollingBloomFilter
from .cpu_budget import (
    EXCUSED_COMMANDS, MESSAGE_OVERHEAD, NOTHING_RESERVED, SEND_BYTES_PER_CPU_SECOND, CpuBudget, CpuBudgets, Reservation,
    estimated_cost,
)
from .presync import HeaderSync
from .messages import (
    HEADER_SIZE, MESSAGE_TYPES, BlockMessage, Headers, Inv, InvItem, Message, Pong, ProtocolError, TxMessage,
    checksum, parse_header, parse_payload, serialize_message,
)

log = logging.getLogger("cleancoin.net")

#: Stop reading from a peer while this many bytes wait to be sent to it.
SEND_BUFFER_LIMIT: int = 1_000_000
#: How many inventory hashes per peer we remember as known to it (a rolling Bloom filter, as
#: bitcoind's m_tx_inventory_known_filter of 50000).
KNOWN_INVENTORY_SIZE: int = 50_000
#: Transactions a peer announced that we have not requested yet (bitcoind's
#: MAX_PEER_TX_ANNOUNCEMENTS); announcements past it are dropped.
MAX_PEER_TX_ANNOUNCEMENTS: int = 5000
#: Our transaction announcements held for a peer while its send queue is over
#: SEND_BUFFER_LIMIT, at most (bitcoind holds m_tx_inventory_to_send, bounded by its pool
#: alone): some 0.5 MB of txids; past it new ones are not held.
MAX_PENDING_TX_ANNOUNCEMENTS: int = 5000
#: getpeerinfo's bytesrecv_per_msg key for every command we do not know.
OTHER_COMMAND: str = "*other*"
#: The only messages decoded before the handshake is complete.
HANDSHAKE_COMMANDS: frozenset[str] = frozenset({"version", "verack"})

_INV_ENTRY = struct.Struct("<I32s")


class PeerHandler(Protocol):
    """The node, as a Peer sees it."""

    async def handle_message(self, peer: Peer, msg: Message) -> None:
        """Process one decoded message from `peer`."""
        ...

    def protocol_violation(self, peer: Peer, err: ProtocolError) -> None:
        """`peer` sent bytes that break the wire format."""
        ...

    def serve_getdata(self, peer: Peer) -> None:
        """Answer some of `peer.getdata_queue` (called by the writer when its outbox is empty)."""
        ...

    def peer_closed(self, peer: Peer) -> None:
        """`peer`'s connection is gone."""
        ...

    def bytes_sent(self, peer: Peer, nbytes: int) -> None:
        """`nbytes` were handed to `peer`'s socket."""
        ...

    def before_handshake(self, peer: Peer, command: str) -> None:
        """`peer` sent a known message other than version/verack before the handshake
        completed (it was not decoded)."""
        ...

    def cpu_budget_spent(self, peer: Peer, mostly_unsolicited: bool) -> None:
        """`peer`'s messages spent its address group's CPU budget (`mostly_unsolicited`: on messages
        nobody asked for, not requests of its own); it is not read until the budget refills."""
        ...


class InvQueue:
    """A FIFO of inventory items kept as their packed 36-byte wire entries (getdata requests
    waiting to be served): 36 bytes an item instead of ~140 for an InvItem object."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._pos = 0                       # offset of the next entry in _chunks[0]
        self._len = 0

    def extend(self, items: Sequence[InvItem]) -> None:
        """Append `items` in order."""
        if items:
            self._chunks.append(b"".join(_INV_ENTRY.pack(t, h) for t, h in items))
            self._len += len(items)

    def popleft(self) -> InvItem:
        """Remove and return the oldest item; IndexError when empty."""
        if not self._len:
            raise IndexError("pop from an empty InvQueue")
        chunk = self._chunks[0]
        item = InvItem(*_INV_ENTRY.unpack_from(chunk, self._pos))
        self._pos += _INV_ENTRY.size
        if self._pos >= len(chunk):
            self._chunks.popleft()
            self._pos = 0
        self._len -= 1
        return item

    def clear(self) -> None:
        """Forget every item."""
        self._chunks.clear()
        self._pos = self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0


def _end_pause(pause: asyncio.Future[None]) -> None:
    if not pause.done():
        pause.set_result(None)


def format_addr(host: str, port: int) -> str:
    """host:port, with IPv6 hosts bracketed (as bitcoind prints them)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normalize_ip(host: str) -> str:
    """`host` with an IPv4-mapped IPv6 prefix removed, so a ban on 1.2.3.4 covers ::ffff:1.2.3.4."""
    return host[7:] if host.lower().startswith("::ffff:") and "." in host else host


class Peer:
    """A connected peer: its stream, outbox, statistics and protocol state."""

    def __init__(self, handler: PeerHandler, peer_id: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, magic: bytes, inbound: bool,
                 connection_type: str, target: str | None, now: Callable[[], float]) -> None:
        self.handler = handler
        self.id = peer_id
        self.reader = reader
        self.writer = writer
        self.magic = magic
        self.inbound = inbound
        #: "inbound", "manual" (-connect/-addnode/addnode add) or "onetry" (addnode onetry).
        self.connection_type = connection_type
        #: The address string we dialled (outbound only): what addnode/disconnectnode match.
        self.target = target
        self._now = now
        loop = asyncio.get_running_loop()
        self._loop = loop

        peername = writer.get_extra_info("peername") or ("?", 0)
        sockname = writer.get_extra_info("sockname") or ("?", 0)
        self.host: str = normalize_ip(str(peername[0]))
        self.port: int = int(peername[1])
        #: As bitcoind's getpeerinfo "addr": the string we dialled for an outbound peer (so
        #: disconnectnode and addnode match what the user typed), else the remote ip:port.
        self.addr: str = target if target else format_addr(self.host, self.port)
        self.addr_bind: str = format_addr(normalize_ip(str(sockname[0])), int(sockname[1]))

        # --- handshake
        #: Our version nonce for this connection (self-connection detection).
        self.local_nonce: int = secrets.randbits(64)
        self.version_sent = False
        self.version_received = False
        self.handshake_done = False
        self.version: int = 0
        self.services: int = 0
        self.subver: str = ""
        self.start_height: int = -1
        self.relay: bool = True
        self.time_offset: int = 0

        # --- statistics (getpeerinfo)
        self.conntime: int = int(now())
        self.connected_at: float = loop.time()
        self.last_send: int = 0
        self.last_recv: int = 0
        self.bytes_sent: int = 0
        self.bytes_recv: int = 0
        self.bytes_sent_per_msg: dict[str, int] = {}
        self.bytes_recv_per_msg: dict[str, int] = {}
        self.ping_nonce: int = 0
        self.ping_sent_at: float = 0.0          # loop time of the outstanding ping, 0 if none
        self.last_ping_at: float = 0.0          # loop time of the last ping sent
        self.ping_time: float | None = None
        self.min_ping: float | None = None
        self.ban_score: int = 0

        # --- inventory and block download
        self.known_inventory = RollingBloomFilter(KNOWN_INVENTORY_SIZE)
        #: Announced transactions not requested yet (at most MAX_PEER_TX_ANNOUNCEMENTS).
        self.tx_announced: deque[bytes] = deque()
        #: Our transactions to announce to it once its send queue is under SEND_BUFFER_LIMIT
        #: again (at most MAX_PENDING_TX_ANNOUNCEMENTS; arrival order).
        self.tx_to_announce: dict[bytes, None] = {}
        #: Transactions requested from this peer and not yet delivered or refused.
        self.txs_in_flight: set[bytes] = set()
        #: Transactions it announced while they were requested from another peer: it is
        #: asked if that request fails (counts against MAX_PEER_TX_ANNOUNCEMENTS).
        self.tx_waiting: set[bytes] = set()
        #: Blocks requested from this peer: hash -> loop time of the request.
        self.blocks_in_flight: dict[bytes, float] = {}
        #: Loop time of the last progress on block download (request sent or block received).
        self.last_block_progress: float = 0.0
        #: Parallel download (block_window.py): since when its oldest requested block is
        #: awaited (bitcoind's m_downloading_since), since when it stalls the download
        #: window (0: not) by holding which block, and blocks it answered notfound for
        #: (hash -> times).
        self.downloading_since: float = 0.0
        self.stalling_since: float = 0.0
        self.stalling_block: bytes | None = None
        self.blocks_refused: dict[bytes, int] = {}
        #: Headers were asked of it for the download's target (that target's hash).
        self.asked_headers_for: bytes | None = None
        #: How far up the download's branch it can serve (block_window.serve_height), for
        #: (its best header's hash, the target's hash): a walk, done once per pair.
        self.serve_key: tuple[bytes, bytes] | None = None
        self.serve_up_to: int = -1
        #: Height of the best block we know the peer has (getpeerinfo's synced_blocks).
        self.synced_blocks: int = -1
        #: Last block hash it announced that we did not know (may tell us it is ahead).
        self.best_announced: bytes | None = None
        #: A getblocks is outstanding: loop time sent and the locator's first hash.
        self.getblocks_sent_at: float = 0.0
        self.getblocks_first: bytes | None = None
        #: After a getblocks answer is downloaded, continue from this hash.
        self.sync_continue_from: bytes | None = None
        #: This peer told us it has nothing more (answered getblocks with an empty inv).
        self.sync_exhausted: bool = False
        #: A getheaders is outstanding (loop time sent; 0: none): only its answer is read.
        self.headers_sent_at: float = 0.0
        #: The branch its headers are showing, counted but not stored until it leads to more
        #: work than our tip (presync.HeaderSync); None when no header session is on.
        self.header_sync: HeaderSync | None = None
        # Its headers showed more work while its session was under way: the session's next
        # round starts again from our locator, so blocks refused before (lagging) are asked again.
        self.refetch_from_fork: bool = False
        #: The stored header of the most work it showed us whose chain has at least the
        #: minimum chain work (an index entry; None: none): below that work, blocks are
        #: downloaded from a peer only up to this header (node.py, "Block download").
        self.best_header: Any = None
        #: Loop time of the last block / transaction it sent that was new to us (0: none):
        #: eviction protects peers that are useful.
        self.last_block_time: float = 0.0
        self.last_tx_time: float = 0.0

        # --- sending
        self.getdata_queue = InvQueue()
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._outbox_bytes = 0
        self._wake_writer = asyncio.Event()
        self._can_read = asyncio.Event()
        self._can_read.set()
        self._writer_task: asyncio.Task[None] | None = None
        #: Its address group's CPU budget and all of them (cpu_budget.py), set by the node; None:
        #: not charged.
        self.cpu_budget: CpuBudget | None = None
        self.cpu_budgets: CpuBudgets | None = None
        self._reserved = NOTHING_RESERVED
        #: The reader's pause for the budget (close() ends it), while it lasts.
        self._budget_pause: asyncio.Future[None] | None = None
        self._checksum_cost = 0.0           # thread CPU the last frame's checksum took
        self.closed = False
        self.close_reason = ""

    # ------------------------------------------------------------------ sending

    def send(self, msg: Message) -> None:
        """Queue `msg` for sending (never blocks; the writer task does the I/O)."""
        if self.closed:
            return
        frame = serialize_message(self.magic, msg)
        self._outbox.append((msg.command, frame))
        self._outbox_bytes += len(frame)
        self._update_read_gate()
        self._wake_writer.set()

    def wake_writer(self) -> None:
        """Tell the writer there is work (new getdata items)."""
        self._update_read_gate()
        self._wake_writer.set()

    @property
    def outbox_bytes(self) -> int:
        """Bytes queued and not yet handed to the socket."""
        return self._outbox_bytes

    def _update_read_gate(self) -> None:
        # Bitcoin's fPauseSend plus "don't process more messages until getdata is drained".
        if self._outbox_bytes > SEND_BUFFER_LIMIT or self.getdata_queue:
            self._can_read.clear()
        else:
            self._can_read.set()

    async def _write_loop(self) -> None:
        while not self.closed:
            if self._outbox:
                command, frame = self._outbox.popleft()
                self.writer.write(frame)
                self.bytes_sent += len(frame)
                self.handler.bytes_sent(self, len(frame))
                self.bytes_sent_per_msg[command] = self.bytes_sent_per_msg.get(command, 0) + len(frame)
                self.last_send = int(self._now())
                await self.writer.drain()
                self._outbox_bytes -= len(frame)
                self._update_read_gate()
                # drain() does not suspend while the kernel takes the bytes: without this, a
                # peer reading fast could have 50000 blocks served in one go while every other
                # peer, RPC and timer waits.
                await asyncio.sleep(0)
            elif self.getdata_queue:
                await self._serve_getdata()
            else:
                self._wake_writer.clear()
                await self._wake_writer.wait()

    async def _serve_getdata(self) -> None:
        """One turn of serving what the peer asked for, charged to its address group's CPU
        budget as a request (no ban score) and waited for like its messages: before 12-08
        serving was free, and 4 connections asking for one 672 KB block over and over took
        0.72 node CPU-s/s (406 MB/s) however many other peers the budget was shared with."""
        reservation = await self._wait_for_budget(MESSAGE_OVERHEAD)
        if self.closed:
            return
        queued = self._outbox_bytes
        start = time.thread_time()
        try:
            self.handler.serve_getdata(self)
        finally:
            # What was queued still has to be written (the kernel's copy, the loop's turns):
            # estimated from its size.
            sent = max(0, self._outbox_bytes - queued)
            self._settle(time.thread_time() - start + MESSAGE_OVERHEAD + sent / SEND_BYTES_PER_CPU_SECOND,
                         excused=True, reservation=reservation)
            self._update_read_gate()

    # ------------------------------------------------------------------ receiving

    async def _read_frame(self) -> tuple[str, bytes]:
        # The magic is read on its own so that garbage is refused at its first four bytes,
        # even when the sender then goes quiet.
        magic = await self.reader.readexactly(4)
        if magic != self.magic:
            raise ProtocolError("bad-magic", magic.hex())
        header = parse_header(magic + await self.reader.readexactly(HEADER_SIZE - 4), self.magic)
        if not self._expected(header.command):
            # Not read, let alone decoded, before the budget can pay for its size (the
            # bytes stay in the kernel's buffers, and TCP then stops the sender).
            self._reserved = await self._wait_for_budget(estimated_cost(header.length))
        else:
            self._reserved = NOTHING_RESERVED
        payload = await self.reader.readexactly(header.length)
        start = time.thread_time()
        if checksum(payload) != header.checksum:
            raise ProtocolError("bad-checksum", header.command)
        self._checksum_cost = time.thread_time() - start
        size = HEADER_SIZE + header.length
        self.bytes_recv += size
        # Unknown commands share one key (bitcoind's NET_MESSAGE_TYPE_OTHER): a key per
        # made-up command would let a peer grow this dict without limit.
        key = header.command if header.command in MESSAGE_TYPES else OTHER_COMMAND
        self.bytes_recv_per_msg[key] = self.bytes_recv_per_msg.get(key, 0) + size
        self.last_recv = int(self._now())
        return header.command, payload

    async def _read_loop(self) -> None:
        while not self.closed:
            await self._can_read.wait()
            # In a call of its own so that the frame and the decoded message are freed before
            # the loop waits again (the wait can last as long as the peer does not read).
            await self._process_frame(*await self._read_frame())
            # One message, then the others' turn (bitcoind's message handler serves peers in
            # turn): buffered bytes are read without suspending, so a burst of thousands of
            # small messages would otherwise hold the event loop until all are handled.
            await asyncio.sleep(0)

    async def _process_frame(self, command: str, payload: bytes) -> None:
        # The handler does not suspend, so this thread's CPU time across it is what this
        # message cost (the other tasks of the loop do not run in between).
        start = time.thread_time() - self._checksum_cost
        delivered = (self.last_block_time, self.last_tx_time)
        # The handshake is no misbehaviour whatever it costs: a group new to the node may open
        # with an empty bucket (cpu_budget.NEWCOMER_POOL), so its version alone can spend it.
        # (A repeated version or verack is charged ban score of its own.)
        handshaking = not self.handshake_done
        asked = False
        try:
            if not self.handshake_done and command not in HANDSHAKE_COMMANDS:
                if command in MESSAGE_TYPES:
                    self.handler.before_handshake(self, command)
                return
            msg = parse_payload(command, payload)
            if msg is None:
                log.debug("peer=%d: ignoring unknown message %r", self.id, command)
                return
            asked = self._asked_for(msg)
            await self.handler.handle_message(self, msg)
        finally:
            # What we asked for, or what brought a block or transaction new to us, is free:
            # an initial block download or a relayed block never waits on the budget.
            free = asked or (self.last_block_time, self.last_tx_time) != delivered
            self._settle(None if free else time.thread_time() - start + MESSAGE_OVERHEAD,
                         excused=handshaking or command in EXCUSED_COMMANDS)

    def _expected(self, command: str) -> bool:
        """A message of `command` may be the answer to a request of ours (known from its
        header alone; `_asked_for` checks the message itself)."""
        if command == "block":
            return bool(self.blocks_in_flight)
        if command == "tx":
            return bool(self.txs_in_flight)
        if command == "headers":
            return bool(self.headers_sent_at)
        if command == "inv":
            return bool(self.getblocks_sent_at)
        return False

    def _asked_for(self, msg: Message) -> bool:
        """`msg` answers a request of ours (checked before it is handled, which settles it)."""
        if isinstance(msg, BlockMessage):
            return msg.block.hash in self.blocks_in_flight
        if isinstance(msg, TxMessage):
            return msg.tx.txid in self.txs_in_flight
        if isinstance(msg, Headers):
            return bool(self.headers_sent_at)
        if isinstance(msg, Inv):
            return bool(self.getblocks_sent_at)
        if isinstance(msg, Pong):
            return bool(self.ping_sent_at)
        return False

    def _settle(self, cost: float | None, *, excused: bool, reservation: Reservation | None = None) -> None:
        """Charge `cost` (None: free) for what was reserved (`reservation`; None: the read
        loop's, `_reserved`)."""
        budget, budgets = self.cpu_budget, self.cpu_budgets
        if reservation is None:
            reservation, self._reserved = self._reserved, NOTHING_RESERVED
        if budget is None or budgets is None:
            return
        if budgets.settle(budget, reservation, cost, unsolicited=not excused):
            self.handler.cpu_budget_spent(self, budget.take_exhaustion())

    async def _wait_for_budget(self, need: float) -> Reservation:
        """Until this peer's address's CPU budget holds `need` (at most all it can hold), and
        the shared one too for a large message; then reserve it (what is returned)."""
        budget, budgets = self.cpu_budget, self.cpu_budgets
        while budget is not None and budgets is not None and not self.closed:
            wait = budgets.delay(budget, need, self._loop.time())
            if wait <= 0:
                return budgets.reserve(budget, need, self._loop.time())
            # A future and a timer, not wait_for (a task each time: a paused ping flood spent
            # half its CPU on them); close() ends the pause, so a peer disconnected while
            # paused is forgotten at once.
            pause = self._budget_pause = self._loop.create_future()
            timer = self._loop.call_later(wait, _end_pause, pause)
            try:
                await pause
            finally:
                timer.cancel()
                self._budget_pause = None
        return NOTHING_RESERVED

    async def run(self) -> None:
        """Serve the connection until it closes; then tell the handler. Never raises
        (except CancelledError): every failure ends in a closed connection."""
        self._writer_task = asyncio.create_task(self._write_loop(), name=f"p2p-writer-{self.id}")
        self._writer_task.add_done_callback(self._writer_done)
        try:
            await self._read_loop()
        except ProtocolError as e:
            if not self.closed:
                self.handler.protocol_violation(self, e)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass                                   # the peer went away (or we closed it)
        except asyncio.CancelledError:
            raise
        except Exception:                          # a bug of ours: lose the peer, not the node
            log.exception("peer=%d: unexpected error, disconnecting", self.id)
        finally:
            self.close(self.close_reason or "connection closed")
            if self._writer_task is not None:
                self._writer_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._writer_task
            self.handler.peer_closed(self)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        # A write error (peer reset) must end the connection, not leave a half-alive peer.
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not self.closed:
            if not isinstance(exc, (ConnectionError, OSError)):
                log.error("peer=%d: writer failed: %r", self.id, exc)
            self.close("send failed")

    def close(self, reason: str = "") -> None:
        """Drop the connection now (queued data is discarded). Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self._budget_pause is not None:
            _end_pause(self._budget_pause)
        self._wake_writer.set()
        self._can_read.set()
        # abort(), not close(): a peer being disconnected for misbehaviour gets nothing more,
        # and a peer that stopped reading cannot hold the close up.
        transport = self.writer.transport
        if transport is not None:
            transport.abort()

    @property
    def not_reading(self) -> bool:
        """Its read loop waits for its CPU budget, or for what it is owed to be sent: the end of
        its stream is then not seen by reading (hangup.py tells it)."""
        return self._budget_pause is not None or not self._can_read.is_set()

    def fileno(self) -> int:
        """The connection's socket descriptor (-1: none, or closed)."""
        if self.closed:
            return -1
        sock = self.writer.get_extra_info("socket")
        try:
            return int(sock.fileno()) if sock is not None else -1
        except (OSError, ValueError):
            return -1

    def __repr__(self) -> str:
        return f"<Peer {self.id} {self.addr} {'in' if self.inbound else 'out'}>"
