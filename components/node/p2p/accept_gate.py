"""Accepting inbound P2P connections at a bounded CPU cost: the listening sockets' own loop.

A connection costs the node's one event-loop thread before any message of it is read: the
accept, the transport, the stream, two tasks, the peer's state, and at its end the close and
what the node forgets with it (about 0.5 to 0.9 ms here, 12-08). Messages are charged to their
address group's CPU budget (cpu_budget.py), connections were not: before 12-08 four threads
connecting from ever new addresses and closing at once (250 connections a second, the most a
Python client here made) took 0.1 to 0.22 node CPU-s/s, with or without a `version`, however
the budget was shared; one /48 of IPv6 holds 65,536 /64s, so budgets per group alone cannot
bound it.

So connections are accepted here, not by asyncio's server: each one admitted is charged
CONNECTION_COST CPU seconds (plus its share of the accept loop's measured time) to one token
bucket all inbound connections share, refilled with ACCEPT_RATE. The node also charges
CONNECTION_COST to the connection's own address group (node.py), so that a group that keeps
reconnecting waits for its budget like one that keeps sending.

While that bucket is in debt the backlog is still drained (since 12-08's review): until then
the listening sockets were not polled, the connections waited in the kernel's backlog
(BACKLOG, 100) and past it the kernel dropped the handshakes; one address connecting faster
than the gate admitted (a non-blocking Python client makes thousands a second) kept the backlog
full of its own connections, and an honest newcomer from any other group was not let in for
as long as the flood kept the backlog full (tests/test_p2p_accept_fairness.py: not within
8 s in half the runs, after 1.8 s in the others; the gate admitted ~60 a second, all the
flood's). Now a connection is accepted whatever the bucket
holds and, in debt, admitted only if its address group had none admitted in the last
GROUP_SPACING seconds (and the debt is above DEBT_FLOOR); any other waits in the gate (at
most MAX_PARKED, as it waited in the backlog before) and is admitted as the bucket refills,
group by group in turn; past MAX_PARKED the oldest of the group with the most waiting is reset
(an accept and a reset: 30 to 55 us, not the ~0.8 ms of a connection set up). So
the flooding group gets one connection a GROUP_SPACING while the others get in at once, and
what admitted connections cost stays bounded: the bucket's burst, its rate and DEBT_FLOOR.
The drain itself is bounded too, by DRAIN_RATE connections a second: past that the backlog
fills as before, and so it does when the loop cannot drain as fast as the flood completes
handshakes (a flood beyond that is the kernel's and the firewall's to meet: docs/node.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence

from .cpu_budget import CpuBudget
from .eviction import netgroup

log = logging.getLogger("cleancoin.net")

#: CPU seconds one inbound connection costs the event-loop thread outside its messages, about:
#: accepted, set up, closed and forgotten (measured 12-08: 0.6 to 0.9 ms a connection that
#: closes at once, with or without its `version`; the accept loop's own part is measured).
CONNECTION_COST: float = 0.0008
#: CPU seconds per second all inbound connections' set-up and tear-down may take together
#: (some 60 connections a second), and what may be spent at once (some 120: a restart's
#: peers reconnecting all at once are let in together).
ACCEPT_RATE: float = 0.05
ACCEPT_BURST: float = 0.1
#: Connections admitted in one turn of the loop at most (asyncio's server takes up to its
#: backlog, 100, at once).
ACCEPTS_PER_TURN: int = 16
#: Connections looked at (accepted, then admitted or closed) in one turn at most, and a second
#: at most over time, with what may be looked at at once: the drain's own bound (about
#: 30-55 us of CPU a connection accepted and reset at once, measured 12-08 at a load of 13:
#: some 0.3-0.55 CPU-s/s at the most, against ~8 CPU-s/s had each been set up).
DRAINS_PER_TURN: int = 256
DRAIN_RATE: float = 10000.0
DRAIN_BURST: float = 1000.0
#: In debt: an address group gets its next connection this long after its last one at the
#: earliest, and none is admitted past DEBT_FLOOR CPU seconds of debt.
GROUP_SPACING: float = 1.0
DEBT_FLOOR: float = -ACCEPT_BURST
#: Address groups whose last admission is remembered (the oldest forgotten first).
MAX_GROUPS: int = 4096
#: Connections accepted in debt and not admitted wait here for the bucket (as they waited in
#: the kernel's backlog before), taken group by group in turn; past this many, the oldest of
#: the group with the most waiting is reset.
MAX_PARKED: int = 128
#: SO_LINGER on, 0 s: close() resets the connection (no FIN handshake, no TIME_WAIT).
_RESET = struct.pack("ii", 1, 0)
#: Stream buffer limit of a connection (asyncio's default, as start_server's).
STREAM_LIMIT: int = 2 ** 16

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _reset(conn: socket.socket) -> None:
    """Close `conn` with an RST (no FIN handshake, no TIME_WAIT)."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    except OSError:
        pass
    conn.close()


class AcceptGate:
    """Serves `sockets` (listening, bound) with `handler`, as `asyncio.start_server` would, but
    pays each connection's cost from a bucket of `rate` CPU seconds a second first."""

    def __init__(self, sockets: Sequence[socket.socket], handler: Handler, *, rate: float = ACCEPT_RATE,
                 burst: float = ACCEPT_BURST, group: Callable[[str], str] = netgroup) -> None:
        self._loop = asyncio.get_running_loop()
        self._sockets = list(sockets)
        self._handler = handler
        self._rate = rate
        self._burst = burst
        self._group = group
        self._bucket = CpuBudget(burst, self._loop.time())
        self._drain = CpuBudget(DRAIN_BURST, self._loop.time())     # tokens: connections
        self._last_admitted: OrderedDict[str, float] = OrderedDict()
        self._parked: OrderedDict[str, deque[socket.socket]] = OrderedDict()
        self._nparked = 0
        self._unpark: asyncio.TimerHandle | None = None
        self._polling = False
        self._resume: asyncio.TimerHandle | None = None
        self._opening: set[asyncio.Task[None]] = set()
        self._closed = False
        #: Connections admitted, closed at once (in debt) and times the gate paused (tests, logs).
        self.accepted = 0
        self.refused = 0
        self.paused = 0

    def start(self) -> None:
        """Begin accepting."""
        for sock in self._sockets:
            sock.setblocking(False)
        self._poll(True)

    def _poll(self, on: bool) -> None:
        if on == self._polling or self._closed:
            return
        self._polling = on
        for sock in self._sockets:
            if on:
                self._loop.add_reader(sock.fileno(), self._ready, sock)
            else:
                self._loop.remove_reader(sock.fileno())

    def _ready(self, sock: socket.socket) -> None:
        start = time.thread_time()
        accepted = looked = 0
        try:
            while looked < DRAINS_PER_TURN and accepted < ACCEPTS_PER_TURN:
                now = self._loop.time()
                self._drain.refill(now, DRAIN_RATE, DRAIN_BURST)
                if self._drain.tokens < 1:
                    self._pause((1 - self._drain.tokens) / DRAIN_RATE, "more connections a second than DRAIN_RATE")
                    return
                try:
                    conn, addr = sock.accept()
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as e:
                    # (EMFILE, ENOBUFS ...: asyncio's server waits a second too.)
                    log.error("accepting a P2P connection failed: %s; trying again in 1 s", e)
                    self._pause(1.0, "")
                    return
                looked += 1
                self._drain.tokens -= 1
                group = self._group_of(addr)
                if not self._admit(group, now):
                    self._park(group, conn)
                    continue
                accepted += 1
                self._start_connection(conn)
        finally:
            if accepted:
                # The admitted connections' share of this turn's time (the refused ones'
                # is bounded by DRAIN_RATE, not taken from the admitted ones' bucket).
                self._bucket.tokens -= (time.thread_time() - start) * accepted / looked

    def _group_of(self, addr: object) -> str:
        host = addr[0] if isinstance(addr, tuple) and addr else str(addr)
        return self._group(host)

    def _admit(self, group: str, now: float) -> bool:
        """Whether a connection of `group` is set up now: while the bucket holds tokens and
        none waits before it; in debt (above DEBT_FLOOR), if its address group had none
        admitted in the last GROUP_SPACING seconds."""
        self._bucket.refill(now, self._rate, self._burst)
        if self._bucket.tokens < 0 or self._nparked:
            last = self._last_admitted.get(group)
            if self._bucket.tokens <= DEBT_FLOOR or (last is not None and now - last < GROUP_SPACING):
                return False
        self._admitted(group, now)
        return True

    def _admitted(self, group: str, now: float) -> None:
        self._last_admitted[group] = now
        self._last_admitted.move_to_end(group)
        if len(self._last_admitted) > MAX_GROUPS:
            self._last_admitted.popitem(last=False)

    def _start_connection(self, conn: socket.socket) -> None:
        self.accepted += 1
        self._bucket.tokens -= CONNECTION_COST
        task = self._loop.create_task(self._open(conn))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    def _park(self, group: str, conn: socket.socket) -> None:
        """`conn` waits for the bucket; past MAX_PARKED the oldest of the group with the most
        waiting is reset (a flood's, not a newcomer's)."""
        self._parked.setdefault(group, deque()).append(conn)
        self._nparked += 1
        if self._nparked > MAX_PARKED:
            crowded = max(self._parked, key=lambda g: len(self._parked[g]))
            waiting = self._parked[crowded]
            _reset(waiting.popleft())
            if not waiting:
                del self._parked[crowded]
            self._nparked -= 1
            self.refused += 1
        self._schedule_unpark()

    def _schedule_unpark(self) -> None:
        if self._unpark is None and self._nparked and not self._closed:
            wait = max(0.0, -self._bucket.tokens / self._rate) + 0.001
            self._unpark = self._loop.call_later(wait, self._unparked)

    def _unparked(self) -> None:
        """Admit waiting connections while the bucket holds tokens, one group after another."""
        self._unpark = None
        now = self._loop.time()
        self._bucket.refill(now, self._rate, self._burst)
        admitted = 0
        while self._nparked and self._bucket.tokens >= 0 and admitted < ACCEPTS_PER_TURN:
            group, waiting = self._parked.popitem(last=False)
            conn = waiting.popleft()
            self._nparked -= 1
            if waiting:
                self._parked[group] = waiting       # its next one after the other groups'
            self._admitted(group, now)
            self._start_connection(conn)
            admitted += 1
        self._schedule_unpark()

    def _pause(self, wait: float, why: str) -> None:
        self.paused += 1
        if why:
            log.debug("inbound connections: %s; not accepting for %.3f s", why, wait)
        self._poll(False)
        self._resume = self._loop.call_later(wait, self._resumed)

    def _resumed(self) -> None:
        self._resume = None
        self._poll(True)

    async def _open(self, conn: socket.socket) -> None:
        reader = asyncio.StreamReader(limit=STREAM_LIMIT)
        protocol = asyncio.StreamReaderProtocol(reader, self._handler)
        try:
            await self._loop.connect_accepted_socket(lambda: protocol, conn)
        except OSError:
            conn.close()

    def close(self) -> None:
        """Stop accepting and close the listening sockets (connections are the node's; those
        still waiting for the bucket are reset)."""
        self._poll(False)
        self._closed = True
        if self._resume is not None:
            self._resume.cancel()
        if self._unpark is not None:
            self._unpark.cancel()
        for waiting in self._parked.values():
            for conn in waiting:
                _reset(conn)
        self._parked.clear()
        self._nparked = 0
        for sock in self._sockets:
            sock.close()
        for task in self._opening:
            task.cancel()
